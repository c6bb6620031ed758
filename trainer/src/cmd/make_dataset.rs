//! (being written)
#[derive(clap::Subcommand, Debug)]
pub enum Kind {}

pub fn run(_kind: Kind) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
