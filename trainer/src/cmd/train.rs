//! (being written)
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    Tokenizer,
    Pretrain,
    Finetune,
}

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_stage: Stage, _args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
