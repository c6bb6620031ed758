//! The VQ-NSP tokenizer (`vqnsp_encoder_base_decoder_3x200x12`,
//! `vqnsp_encoder_large_decoder_3x200x24`): a `NeuralTransformer` encoder, the
//! `encode_task_layer`, a normalised-EMA vector quantizer, a 3-block decoder on the
//! code grid and two heads predicting each patch's Fourier amplitude and phase
//! ("neural spectrum prediction").
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

use super::layers::{Linear, WeightInit};
use super::transformer::{
    BackboneConfig, NeuralTransformer, PatchKind, TransformerConfig, PATCH_SIZE,
};
use super::ModelError;
use crate::checkpoint::StateDict;

/// The codebook tensors: they change by EMA and k-means, never by gradient (and are
/// exempt from weight decay).
pub const CODEBOOK_KEYS: [&str; 5] = [
    "quantize.embedding.weight",
    "quantize.embedding.cluster_size",
    "quantize.embedding.embed_avg",
    "quantize.embedding.initted",
    "quantize.cluster_size",
];

/// Official names of the tokenizers.
pub const VQNSP_NAMES: [&str; 2] = [
    "vqnsp_encoder_base_decoder_3x200x12",
    "vqnsp_encoder_large_decoder_3x200x24",
];

/// Settings of a tokenizer.
#[derive(Debug, Clone, PartialEq)]
pub struct VqnspConfig {
    pub encoder: TransformerConfig,
    pub decoder: TransformerConfig,
    /// Codebook size (`--codebook_n_emd`).
    pub n_embed: i64,
    /// Code vector size (`--codebook_emd_dim`).
    pub code_dim: i64,
    /// EMA decay of the codebook (`--ema_decay`).
    pub decay: f64,
    /// Start with an empty codebook and k-means it on the first batch
    /// (`--quantize_kmeans_init`); otherwise a random unit-norm codebook.
    pub kmeans_init: bool,
    /// Weight of the commitment loss.
    pub beta: f64,
}

fn part(depth: i64, patch: PatchKind) -> TransformerConfig {
    TransformerConfig {
        backbone: BackboneConfig {
            embed_dim: 200,
            depth,
            num_heads: 10,
            mlp_ratio: 4.0,
            qkv_bias: true,
            qk_norm: false,
            init_values: 0.0,
            patch,
            drop_rate: 0.0,
            attn_drop_rate: 0.0,
            drop_path_rate: 0.0,
            init: WeightInit::Normal(0.02),
            embed_init: WeightInit::Normal(0.02),
        },
        num_classes: 0,
        init_scale: 0.001,
    }
}

impl VqnspConfig {
    /// A tokenizer with `encoder_depth` encoder blocks and the README run's settings
    /// otherwise (3 decoder blocks, decay 0.99, k-means init).
    pub fn new(encoder_depth: i64, n_embed: i64, code_dim: i64) -> VqnspConfig {
        VqnspConfig {
            encoder: part(encoder_depth, PatchKind::Temporal { out_chans: 8 }),
            decoder: part(3, PatchKind::Code { code_dim }),
            n_embed,
            code_dim,
            decay: 0.99,
            kmeans_init: true,
            beta: 1.0,
        }
    }

    /// From the official name, e.g. `vqnsp_encoder_base_decoder_3x200x12`.
    pub fn from_name(name: &str, n_embed: i64, code_dim: i64) -> Result<VqnspConfig, ModelError> {
        let depth = match name {
            "vqnsp_encoder_base_decoder_3x200x12" => 12,
            "vqnsp_encoder_large_decoder_3x200x24" => 24,
            _ => {
                return Err(ModelError::UnknownModel {
                    name: name.to_string(),
                    known: VQNSP_NAMES.join(", "),
                })
            }
        };
        Ok(VqnspConfig::new(depth, n_embed, code_dim))
    }

    /// Read encoder depth, codebook size and code size off a tokenizer state dict.
    pub fn infer(sd: &StateDict) -> Result<VqnspConfig, ModelError> {
        let cb = sd.get("quantize.embedding.weight").ok_or_else(|| {
            ModelError::Input(
                "not a VQ-NSP tokenizer checkpoint: it has no quantize.embedding.weight".into(),
            )
        })?;
        if cb.shape.len() != 2 {
            return Err(ModelError::Input(format!(
                "quantize.embedding.weight has shape {:?}, expected [codes, dim]",
                cb.shape
            )));
        }
        let depth = sd
            .keys()
            .filter_map(|k| k.strip_prefix("encoder.blocks."))
            .filter_map(|k| k.split('.').next()?.parse::<i64>().ok())
            .max()
            .map_or(0, |m| m + 1);
        if depth == 0 {
            return Err(ModelError::Input(
                "not a VQ-NSP tokenizer checkpoint: it has no encoder.blocks.*".into(),
            ));
        }
        Ok(VqnspConfig::new(
            depth,
            cb.shape[0] as i64,
            cb.shape[1] as i64,
        ))
    }
}

/// `NormEMAVectorQuantizer` with its `EmbeddingEMA` codebook.
#[derive(Debug)]
pub struct NormEmaQuantizer {
    /// `quantize.embedding.weight` `[n_embed, code_dim]`, unit-norm rows.
    pub weight: Tensor,
    /// `quantize.embedding.cluster_size`: k-means bin counts.
    pub embedding_cluster_size: Tensor,
    /// `quantize.embedding.embed_avg` (kept for the state dict; the official training
    /// path never reads it).
    pub embed_avg: Tensor,
    /// `quantize.embedding.initted` `[1]`: 0 until the k-means initialisation ran.
    pub initted: Tensor,
    /// `quantize.cluster_size`: EMA of code usage.
    pub cluster_size: Tensor,
    pub n_embed: i64,
    pub code_dim: i64,
    pub decay: f64,
    pub beta: f64,
}

/// L2-normalise the last dimension like `F.normalize` (eps 1e-12).
pub fn l2norm(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2.0, [-1], true).clamp_min(1e-12)
}

/// Result of quantizing a batch of vectors.
#[derive(Debug)]
pub struct Quantized {
    /// Straight-through codes `z + (e[idx] − z).detach()`, shaped like the input.
    pub z_q: Tensor,
    /// `beta · mse(e[idx], z)`.
    pub loss: Tensor,
    /// Code index per vector.
    pub indices: Tensor,
}

impl NormEmaQuantizer {
    fn new(
        p: &nn::Path,
        n_embed: i64,
        code_dim: i64,
        decay: f64,
        beta: f64,
        kmeans_init: bool,
    ) -> Self {
        let e = p / "embedding";
        let weight = e.zeros_no_train("weight", &[n_embed, code_dim]);
        if !kmeans_init {
            tch::no_grad(|| {
                let w = l2norm(&Tensor::randn(
                    [n_embed, code_dim],
                    (Kind::Float, weight.device()),
                ));
                weight.shallow_clone().copy_(&w);
            });
        }
        let embed_avg = e.zeros_no_train("embed_avg", &[n_embed, code_dim]);
        tch::no_grad(|| embed_avg.shallow_clone().copy_(&weight));
        let initted = e.var(
            "initted",
            &[1],
            Init::Const(if kmeans_init { 0.0 } else { 1.0 }),
        );
        let initted = tch::no_grad(|| initted.set_requires_grad(false));
        NormEmaQuantizer {
            embedding_cluster_size: e.zeros_no_train("cluster_size", &[n_embed]),
            weight,
            embed_avg,
            initted,
            cluster_size: p.zeros_no_train("cluster_size", &[n_embed]),
            n_embed,
            code_dim,
            decay,
            beta,
        }
    }

    /// Whether the codebook has been initialised.
    pub fn is_initted(&self) -> bool {
        self.initted.double_value(&[0]) != 0.0
    }

    /// Quantize `z_raw` `[..., code_dim]` (not yet normalised). In training the
    /// codebook follows the batch (normalised EMA); in any mode an uninitialised
    /// codebook is first set by k-means on this batch, as the official code does.
    pub fn forward(&self, z_raw: &Tensor, train: bool) -> Quantized {
        let shape = z_raw.size();
        let z = l2norm(z_raw);
        let flat = z.reshape([-1, self.code_dim]);
        if !self.is_initted() {
            tch::no_grad(|| {
                let (means, bins) = kmeans(&flat.detach(), self.n_embed, 10);
                self.weight.shallow_clone().copy_(&means);
                self.embedding_cluster_size
                    .shallow_clone()
                    .copy_(&bins.to_kind(Kind::Float));
                let _ = self.initted.shallow_clone().fill_(1.0);
            });
        }
        let indices = tch::no_grad(|| {
            let d = flat
                .pow_tensor_scalar(2)
                .sum_dim_intlist(1, true, None::<Kind>)
                + self
                    .weight
                    .pow_tensor_scalar(2)
                    .sum_dim_intlist(1, false, None::<Kind>)
                - flat.matmul(&self.weight.tr()) * 2.0;
            d.argmin(1, false)
        });
        let e = self.weight.index_select(0, &indices).detach();
        tch::no_grad(|| self.update(&flat.detach(), &indices, train));
        let z_q = e.reshape(shape.as_slice());
        let loss = z_q.detach().mse_loss(&z, tch::Reduction::Mean) * self.beta;
        let z_q = &z + (&z_q - &z).detach();
        Quantized {
            z_q,
            loss,
            indices: indices.reshape(&shape[..shape.len() - 1]),
        }
    }

    /// Usage statistics (every mode) and, in training, the normalised-EMA codebook
    /// step. Sums use `bincount`/`index_add` instead of the official one-hot matrix
    /// (which is `vectors × 8192` floats) — same values up to summation order.
    fn update(&self, flat: &Tensor, indices: &Tensor, train: bool) {
        let bins = indices
            .bincount(None::<Tensor>, self.n_embed)
            .to_kind(Kind::Float);
        let mut cs = self.cluster_size.shallow_clone();
        let _ = cs.g_mul_scalar_(self.decay);
        let _ = cs.g_add_(&(&bins * (1.0 - self.decay)));
        if !train {
            return;
        }
        let zero = bins.eq(0.0);
        let bins_c = bins.masked_fill(&zero, 1.0);
        let sums = Tensor::zeros([self.n_embed, self.code_dim], (Kind::Float, flat.device()))
            .index_add(0, indices, flat);
        let normalized = l2norm(&(sums / bins_c.unsqueeze(1)));
        let normalized = self.weight.where_self(&zero.unsqueeze(1), &normalized);
        let w = l2norm(&(&self.weight * self.decay + normalized * (1.0 - self.decay)));
        self.weight.shallow_clone().copy_(&w);
    }
}

/// Cosine k-means (10 iterations in the official code) for the codebook's first
/// values: `num_clusters` distinct samples to start (with replacement when there
/// are fewer samples), empty clusters keep their previous mean. Returns the means
/// and the final bin counts.
pub fn kmeans(samples: &Tensor, num_clusters: i64, iters: usize) -> (Tensor, Tensor) {
    let (m, dim) = (samples.size()[0], samples.size()[1]);
    let dev = samples.device();
    let idx = if m >= num_clusters {
        Tensor::randperm(m, (Kind::Int64, dev)).narrow(0, 0, num_clusters)
    } else {
        Tensor::randint(m, [num_clusters], (Kind::Int64, dev))
    };
    let mut means = samples.index_select(0, &idx);
    let mut bins = Tensor::zeros([num_clusters], (Kind::Int64, dev));
    for _ in 0..iters {
        // Nearest mean by cosine similarity, in row chunks to bound memory.
        let chunk = 4096;
        let mut parts = Vec::new();
        let mut start = 0;
        while start < m {
            let len = chunk.min(m - start);
            parts.push(
                samples
                    .narrow(0, start, len)
                    .matmul(&means.tr())
                    .argmax(-1, false),
            );
            start += len;
        }
        let buckets = Tensor::cat(&parts, 0);
        bins = buckets.bincount(None::<Tensor>, num_clusters);
        let zero = bins.eq(0);
        let bins_c = bins.masked_fill(&zero, 1);
        let sums = Tensor::zeros([num_clusters, dim], (samples.kind(), dev))
            .index_add(0, &buckets, samples);
        let new_means = l2norm(&(sums / bins_c.unsqueeze(1).to_kind(samples.kind())));
        means = means.where_self(&zero.unsqueeze(1), &new_means);
    }
    (means, bins)
}

/// Amplitude and phase targets: `|FFT|` and `angle(FFT)` of each 200-sample patch,
/// each standardised per sample over (N, A, 200) with the unbiased std.
///
/// torch's FFT of real input has Im exactly +0.0 at bins 0 and 100 (so the phase there
/// is 0 or +π); that is enforced here so that the targets do not depend on the FFT
/// kernel's rounding of those bins.
pub fn nsp_targets(x: &Tensor) -> (Tensor, Tensor) {
    let n = x.size()[3];
    let spec = x.fft_fft(None::<i64>, -1, "backward");
    let amp = spec.abs();
    let re = spec.real();
    let im = spec.imag();
    let bins = Tensor::arange(n, (Kind::Int64, x.device()));
    let edge = bins.eq(0).logical_or(&bins.eq(n / 2));
    let im = im.where_scalarother(&edge.logical_not(), 0.0);
    let angle = im.atan2(&re);
    (std_norm(&amp), std_norm(&angle))
}

fn std_norm(x: &Tensor) -> Tensor {
    let mean = x.mean_dim(&[1i64, 2, 3][..], true, None::<Kind>);
    let std = x.std_dim(&[1i64, 2, 3][..], true, true);
    (x - mean) / std
}

/// `VQNSP`.
#[derive(Debug)]
pub struct Vqnsp {
    pub encoder: NeuralTransformer,
    pub decoder: NeuralTransformer,
    pub quantize: NormEmaQuantizer,
    pub encode_task_layer: [Linear; 2],
    pub decode_task_layer: [Linear; 2],
    pub decode_task_layer_angle: [Linear; 2],
    pub config: VqnspConfig,
}

/// Encoder side of one batch.
#[derive(Debug)]
pub struct Encoded {
    /// `encode_task_layer` output `[B, N·A, code_dim]` (before normalisation).
    pub encoder_out: Tensor,
    /// Straight-through quantized vectors `[B, N·A, code_dim]`.
    pub quantize: Tensor,
    /// Codes `[B, N·A]`.
    pub codes: Tensor,
    /// Commitment loss.
    pub quant_loss: Tensor,
}

/// Full forward pass with the losses.
#[derive(Debug)]
pub struct VqnspOutput {
    pub encoded: Encoded,
    /// Amplitude prediction `[B, N·A, 200]`.
    pub rec_amp: Tensor,
    /// Phase prediction `[B, N·A, 200]`.
    pub rec_angle: Tensor,
    /// Targets `[B, N, A, 200]`.
    pub target_amp: Tensor,
    pub target_angle: Tensor,
    pub rec_loss: Tensor,
    pub rec_angle_loss: Tensor,
    /// quant + rec + rec_angle.
    pub loss: Tensor,
}

fn task_layer(p: &nn::Path, d_in: i64, d_out: i64) -> [Linear; 2] {
    [
        Linear::new(&(p / 0), d_in, d_in, true, WeightInit::Normal(0.02)),
        Linear::new(&(p / 2), d_in, d_out, true, WeightInit::Normal(0.02)),
    ]
}

fn run_task(l: &[Linear; 2], x: &Tensor) -> Tensor {
    l[1].forward(&l[0].forward(x).tanh())
}

impl Vqnsp {
    pub fn new(p: &nn::Path, c: &VqnspConfig) -> Vqnsp {
        let d = c.encoder.backbone.embed_dim;
        let dd = c.decoder.backbone.embed_dim;
        Vqnsp {
            encoder: NeuralTransformer::new(&(p / "encoder"), &c.encoder),
            decoder: NeuralTransformer::new(&(p / "decoder"), &c.decoder),
            quantize: NormEmaQuantizer::new(
                &(p / "quantize"),
                c.n_embed,
                c.code_dim,
                c.decay,
                c.beta,
                c.kmeans_init,
            ),
            encode_task_layer: task_layer(&(p / "encode_task_layer"), d, c.code_dim),
            decode_task_layer: task_layer(&(p / "decode_task_layer"), dd, PATCH_SIZE),
            decode_task_layer_angle: task_layer(&(p / "decode_task_layer_angle"), dd, PATCH_SIZE),
            config: c.clone(),
        }
    }

    /// Encode and quantize `x` (µV/100, `[B, N, A, 200]`).
    pub fn encode(
        &self,
        x: &Tensor,
        input_chans: &Tensor,
        train: bool,
    ) -> Result<Encoded, ModelError> {
        let feats = self.encoder.forward_patch_tokens(x, input_chans, train)?;
        let encoder_out = run_task(&self.encode_task_layer, &feats);
        let q = self.quantize.forward(&encoder_out, train);
        Ok(Encoded {
            encoder_out,
            quantize: q.z_q,
            codes: q.indices,
            quant_loss: q.loss,
        })
    }

    /// Code ids `[B, N·A]` (`get_codebook_indices`; eval mode).
    pub fn codes(&self, x: &Tensor, input_chans: &Tensor) -> Result<Tensor, ModelError> {
        tch::no_grad(|| Ok(self.encode(x, input_chans, false)?.codes))
    }

    /// Decode quantized vectors `[B, N·A, code_dim]` of an `N × A` grid into
    /// amplitude and phase predictions `[B, N·A, 200]`.
    pub fn decode(
        &self,
        quantize: &Tensor,
        n: i64,
        a: i64,
        input_chans: &Tensor,
        train: bool,
    ) -> Result<(Tensor, Tensor), ModelError> {
        let b = quantize.size()[0];
        let grid = quantize
            .reshape([b, n, a, self.config.code_dim])
            .permute([0, 3, 1, 2]);
        let feats = self
            .decoder
            .forward_patch_tokens(&grid, input_chans, train)?;
        Ok((
            run_task(&self.decode_task_layer, &feats),
            run_task(&self.decode_task_layer_angle, &feats),
        ))
    }

    /// `VQNSP.forward`: targets, encode, quantize, decode and the three losses.
    pub fn forward(
        &self,
        x: &Tensor,
        input_chans: &Tensor,
        train: bool,
    ) -> Result<VqnspOutput, ModelError> {
        let s = x.size();
        if s.len() != 4 {
            return Err(ModelError::Input(format!(
                "expected [B, N, A, 200] EEG, got {s:?}"
            )));
        }
        let (b, n, a) = (s[0], s[1], s[2]);
        let (target_amp, target_angle) = tch::no_grad(|| nsp_targets(x));
        let encoded = self.encode(x, input_chans, train)?;
        let (rec_amp, rec_angle) = self.decode(&encoded.quantize, n, a, input_chans, train)?;
        let rec_loss = rec_amp.mse_loss(&target_amp.reshape([b, n * a, -1]), tch::Reduction::Mean);
        let rec_angle_loss =
            rec_angle.mse_loss(&target_angle.reshape([b, n * a, -1]), tch::Reduction::Mean);
        let loss = &encoded.quant_loss + &rec_loss + &rec_angle_loss;
        Ok(VqnspOutput {
            encoded,
            rec_amp,
            rec_angle,
            target_amp,
            target_angle,
            rec_loss,
            rec_angle_loss,
            loss,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;
    use tch::Device;

    fn small(kmeans_init: bool) -> (VarStore, Vqnsp) {
        let mut c = VqnspConfig::new(2, 16, 8);
        c.kmeans_init = kmeans_init;
        let vs = VarStore::new(Device::Cpu);
        let m = Vqnsp::new(&vs.root(), &c);
        (vs, m)
    }

    fn input(b: i64) -> (Tensor, Tensor) {
        (
            Tensor::randn([b, 3, 4, 200], (Kind::Float, Device::Cpu)),
            Tensor::from_slice(&[0i64, 1, 5, 9]),
        )
    }

    fn row_norms(w: &Tensor) -> Tensor {
        w.norm_scalaropt_dim(2.0, [-1], false)
    }

    #[test]
    fn kmeans_initialises_the_codebook_on_the_first_batch() {
        let _rng = crate::train::rng::torch_rng_lock();
        tch::manual_seed(1);
        let (_vs, m) = small(true);
        assert!(!m.quantize.is_initted());
        assert_eq!(
            m.quantize.weight.abs().sum(Kind::Float).double_value(&[]),
            0.0
        );
        let (x, c) = input(4); // 48 vectors ≥ 16 codes: distinct starting means
        let codes = m.codes(&x, &c).unwrap();
        assert!(m.quantize.is_initted());
        let n = row_norms(&m.quantize.weight);
        assert!((n - 1.0).abs().max().double_value(&[]) < 1e-5);
        // Bin counts of the final k-means assignment cover every vector.
        let bins = m
            .quantize
            .embedding_cluster_size
            .sum(Kind::Float)
            .double_value(&[]);
        assert_eq!(bins, 48.0);
        assert_eq!(codes.size(), [4, 12]);
        // A second batch does not re-run k-means.
        let w = m.quantize.weight.copy();
        let _ = m.codes(&x, &c).unwrap();
        assert!(w.equal(&m.quantize.weight));
    }

    #[test]
    fn training_moves_the_codebook_by_normalised_ema_and_eval_does_not() {
        let _rng = crate::train::rng::torch_rng_lock();
        tch::manual_seed(2);
        let (_vs, m) = small(false);
        let (x, c) = input(2);
        let w0 = m.quantize.weight.copy();
        let cs0 = m.quantize.cluster_size.copy();
        let out = tch::no_grad(|| m.forward(&x, &c, false).unwrap());
        assert!(w0.equal(&m.quantize.weight), "eval changed the codebook");
        // Eval still tracks usage: decayed sum of one-hot counts.
        let used = m.quantize.cluster_size.sum(Kind::Float).double_value(&[]);
        assert!((used - 24.0 * 0.01).abs() < 1e-4, "{used}");
        assert!(!cs0.equal(&m.quantize.cluster_size));

        let out_t = m.forward(&x, &c, true).unwrap();
        assert!(out_t.encoded.codes.equal(&out.encoded.codes));
        let moved = (&m.quantize.weight - &w0)
            .abs()
            .sum_dim_intlist(1, false, None::<Kind>);
        let used: Vec<i64> = Vec::try_from(out_t.encoded.codes.flatten(0, -1)).unwrap();
        for k in 0..16 {
            let dist = moved.double_value(&[k]);
            if used.contains(&k) {
                assert!(dist > 1e-4, "used code {k} did not move");
            } else {
                // Only the renormalisation's rounding (as in the official update).
                assert!(dist < 1e-6, "unused code {k} moved by {dist}");
            }
        }
        let n = row_norms(&m.quantize.weight);
        assert!((n - 1.0).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn gradients_reach_the_encoder_through_the_straight_through_codes() {
        let _rng = crate::train::rng::torch_rng_lock();
        tch::manual_seed(3);
        let (vs, m) = small(false);
        let (x, c) = input(2);
        let out = m.forward(&x, &c, true).unwrap();
        out.loss.backward();
        let vars = vs.variables();
        for name in [
            "encoder.blocks.0.attn.qkv.weight",
            "encoder.patch_embed.conv1.weight",
            "encode_task_layer.2.weight",
            "decoder.blocks.2.mlp.fc2.weight",
            "decode_task_layer_angle.2.bias",
        ] {
            let g = vars[name].grad();
            assert!(
                g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{name}"
            );
        }
        for name in CODEBOOK_KEYS {
            assert!(
                !vars[name].requires_grad(),
                "{name} must not train by gradient"
            );
        }
    }

    #[test]
    fn targets_have_exact_zero_phase_imaginary_part_at_dc_and_nyquist() {
        let _rng = crate::train::rng::torch_rng_lock();
        let x = Tensor::randn([2, 3, 4, 200], (Kind::Float, Device::Cpu));
        let (amp, angle) = nsp_targets(&x);
        assert_eq!(amp.size(), [2, 3, 4, 200]);
        // Standardised per sample: mean 0, unbiased std 1.
        let m = angle.mean_dim(&[1i64, 2, 3][..], false, None::<Kind>);
        assert!(m.abs().max().double_value(&[]) < 1e-5);
        let s = amp.std_dim(&[1i64, 2, 3][..], true, false);
        assert!((s - 1.0).abs().max().double_value(&[]) < 1e-5);
        // Raw phase at bins 0 and 100 is 0 or +π only (never −π).
        let spec = x.fft_fft(None::<i64>, -1, "backward");
        let raw = spec.imag().where_scalarother(
            &Tensor::arange(200, (Kind::Int64, Device::Cpu))
                .eq(0)
                .logical_or(&Tensor::arange(200, (Kind::Int64, Device::Cpu)).eq(100))
                .logical_not(),
            0.0,
        );
        let ang = raw.atan2(&spec.real());
        for k in [0, 100] {
            let a = ang.select(3, k);
            assert!(a.ge(0.0).all().int64_value(&[]) == 1);
        }
    }

    #[test]
    fn single_patch_decoding_is_refused_like_the_official_decoder() {
        let _rng = crate::train::rng::torch_rng_lock();
        let (_vs, m) = small(false);
        let x = Tensor::randn([1, 3, 1, 200], (Kind::Float, Device::Cpu));
        let c = Tensor::from_slice(&[0i64, 1, 2, 3]);
        assert!(m.codes(&x, &c).is_ok());
        let e = m.forward(&x, &c, false).unwrap_err();
        assert!(e.to_string().contains("at least 2 patches"), "{e}");
    }
}
