//! Building blocks shared by the three networks: linear layers, layer norms, the
//! temporal-convolution patch embedding, attention with optional q/k norm and
//! `q_bias`/`v_bias`, the MLP and the pre-norm block with layer scale and drop path.
//!
//! Each struct creates its tensors under the official parameter names (the `nn::Path`
//! it is given mirrors the PyTorch module path), so a state dict loads by name. The
//! initialisations follow the official constructors, because training starts from them.
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// LayerNorm epsilon of every transformer norm (`partial(nn.LayerNorm, eps=1e-6)`).
pub const LN_EPS: f64 = 1e-6;
/// GroupNorm epsilon in the temporal convolution (PyTorch's default).
pub const GN_EPS: f64 = 1e-5;

/// How a weight starts; the official code uses three different recipes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WeightInit {
    /// timm `trunc_normal_(std)` with its default bounds ±2 (absolute), which for
    /// std 0.02 is a plain normal.
    Normal(f64),
    /// `trunc_normal_(std, a=-std, b=std)`: the pretraining model's helper truncates
    /// at one standard deviation.
    TruncNormal1Sigma(f64),
    /// PyTorch's default for `nn.Linear`/`nn.Conv2d`: kaiming-uniform with a=√5,
    /// i.e. U(±1/√fan_in).
    TorchDefault,
}

/// A variable initialised per `init` (`fan_in` for the PyTorch default).
pub fn weight(p: &nn::Path, name: &str, dims: &[i64], init: WeightInit, fan_in: i64) -> Tensor {
    match init {
        WeightInit::Normal(std) => p.var(
            name,
            dims,
            Init::Randn {
                mean: 0.0,
                stdev: std,
            },
        ),
        WeightInit::TorchDefault => {
            let b = 1.0 / (fan_in.max(1) as f64).sqrt();
            p.var(name, dims, Init::Uniform { lo: -b, up: b })
        }
        WeightInit::TruncNormal1Sigma(std) => {
            let mut t = p.var(name, dims, Init::Const(0.0));
            tch::no_grad(|| trunc_normal_(&mut t, std, -std, std));
            t
        }
    }
}

/// Fill `t` with a normal(0, std) truncated to [a, b], by the inverse-CDF method that
/// timm and PyTorch use.
pub fn trunc_normal_(t: &mut Tensor, std: f64, a: f64, b: f64) {
    let cdf = |x: f64| (1.0 + libm_erf(x / std / std::f64::consts::SQRT_2)) / 2.0;
    let (l, u) = (cdf(a), cdf(b));
    let _ = t.uniform_(2.0 * l - 1.0, 2.0 * u - 1.0);
    let _ = t.erfinv_();
    let _ = t.g_mul_scalar_(std * std::f64::consts::SQRT_2);
    let _ = t.clamp_(a, b);
}

/// erf for the truncation bounds (std has none); Abramowitz–Stegun 7.1.26 is enough
/// for choosing a sampling interval (|error| < 1.5e-7).
fn libm_erf(x: f64) -> f64 {
    let s = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    s * y
}

/// `nn.Linear` under the official names `weight` [out, in] and `bias` [out].
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Weight per `init`; bias zero except with the PyTorch default (uniform).
    pub fn new(p: &nn::Path, input: i64, output: i64, bias: bool, init: WeightInit) -> Linear {
        let weight = weight(p, "weight", &[output, input], init, input);
        let bias = bias.then(|| match init {
            WeightInit::TorchDefault => {
                let b = 1.0 / (input.max(1) as f64).sqrt();
                p.var("bias", &[output], Init::Uniform { lo: -b, up: b })
            }
            _ => p.var("bias", &[output], Init::Const(0.0)),
        });
        Linear { weight, bias }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// `nn.LayerNorm` (weight 1, bias 0).
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub dim: i64,
}

impl LayerNorm {
    pub fn new(p: &nn::Path, dim: i64) -> LayerNorm {
        LayerNorm {
            weight: p.var("weight", &[dim], Init::Const(1.0)),
            bias: p.var("bias", &[dim], Init::Const(0.0)),
            dim,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm(
            [self.dim],
            Some(&self.weight),
            Some(&self.bias),
            LN_EPS,
            true,
        )
    }
}

/// Exact (erf) GELU, as `nn.GELU()`.
pub fn gelu(x: &Tensor) -> Tensor {
    x.gelu("none")
}

/// Per-sample stochastic depth (timm `drop_path`): in training, zero a sample's
/// residual branch with probability `p` and scale the kept ones by 1/(1−p).
pub fn drop_path(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return x.shallow_clone();
    }
    let keep = 1.0 - p;
    let mut shape = vec![x.size()[0]];
    shape.extend(std::iter::repeat_n(1, x.dim() - 1));
    let mask = (Tensor::rand(shape, (x.kind(), x.device())) + keep).floor();
    x.g_div_scalar(keep) * mask
}

/// One `nn.Conv2d` + `nn.GroupNorm(4)` stage of the temporal convolution.
#[derive(Debug)]
struct ConvStage {
    weight: Tensor,
    bias: Tensor,
    gn_weight: Tensor,
    gn_bias: Tensor,
    stride: [i64; 2],
    padding: [i64; 2],
}

/// `TemporalConv`: the patch embedding of the fine-tuning, pretraining and tokenizer
/// encoder models. Input `[B, N, A, 200]` → `[B, N·A, 25·c]`, feature index `t·c + ch`.
///
/// GroupNorm statistics span all N·A patches of a sample (the input is one image of
/// height N·A), so a patch's embedding depends on the other patches of its sample.
#[derive(Debug)]
pub struct TemporalConv {
    stages: [ConvStage; 3],
    pub out_chans: i64,
}

impl TemporalConv {
    /// `conv_init` is `TorchDefault` in the fine-tuning/tokenizer models and the 1-σ
    /// truncated normal in the pretraining model (its `_init_weights` covers Conv2d).
    pub fn new(p: &nn::Path, out_chans: i64, conv_init: WeightInit) -> TemporalConv {
        let stage = |i: usize, cin: i64, k: i64, stride: i64, pad: i64| {
            let cp = p / format!("conv{i}");
            let np = p / format!("norm{i}");
            let fan_in = cin * k;
            let w = weight(&cp, "weight", &[out_chans, cin, 1, k], conv_init, fan_in);
            let b = match conv_init {
                WeightInit::TorchDefault => {
                    let bound = 1.0 / (fan_in as f64).sqrt();
                    cp.var(
                        "bias",
                        &[out_chans],
                        Init::Uniform {
                            lo: -bound,
                            up: bound,
                        },
                    )
                }
                _ => cp.var("bias", &[out_chans], Init::Const(0.0)),
            };
            ConvStage {
                weight: w,
                bias: b,
                gn_weight: np.var("weight", &[out_chans], Init::Const(1.0)),
                gn_bias: np.var("bias", &[out_chans], Init::Const(0.0)),
                stride: [1, stride],
                padding: [0, pad],
            }
        };
        TemporalConv {
            stages: [
                stage(1, 1, 15, 8, 7),
                stage(2, out_chans, 3, 1, 1),
                stage(3, out_chans, 3, 1, 1),
            ],
            out_chans,
        }
    }

    /// `[B, N, A, T]` → `[B, N·A, (T/8)·c]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let (b, na, t) = (s[0], s[1] * s[2], s[3]);
        let mut h = x.reshape([b, 1, na, t]);
        for st in &self.stages {
            h = h.conv2d(&st.weight, Some(&st.bias), st.stride, st.padding, [1, 1], 1);
            h = h.group_norm(4, Some(&st.gn_weight), Some(&st.gn_bias), GN_EPS, true);
            h = gelu(&h);
        }
        // 'B C NA T -> B NA (T C)'
        let s = h.size();
        h.permute([0, 2, 3, 1]).reshape([s[0], s[2], s[3] * s[1]])
    }
}

/// The tokenizer decoder's `PatchEmbed`: a 1×1 `Conv2d(code_dim → embed)` on the code
/// grid `[B, code_dim, N, A]`, giving tokens `[B, N·A, embed]` in electrode-major order.
#[derive(Debug)]
pub struct CodePatchEmbed {
    weight: Tensor,
    bias: Tensor,
}

impl CodePatchEmbed {
    pub fn new(p: &nn::Path, code_dim: i64, embed_dim: i64) -> CodePatchEmbed {
        let p = p / "proj";
        let bound = 1.0 / (code_dim as f64).sqrt();
        CodePatchEmbed {
            weight: weight(
                &p,
                "weight",
                &[embed_dim, code_dim, 1, 1],
                WeightInit::TorchDefault,
                code_dim,
            ),
            bias: p.var(
                "bias",
                &[embed_dim],
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            ),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(&self.weight, Some(&self.bias), [1, 1], [0, 0], [1, 1], 1)
            .flatten(2, -1)
            .transpose(1, 2)
    }
}

/// Settings of one transformer block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockConfig {
    pub dim: i64,
    pub num_heads: i64,
    pub mlp_ratio: f64,
    /// `q_bias` and `v_bias` (the k bias is fixed at zero).
    pub qkv_bias: bool,
    /// Per-head LayerNorm of q and k (`q_norm`, `k_norm`).
    pub qk_norm: bool,
    /// Layer scale initial value; 0 disables `gamma_1`/`gamma_2`.
    pub init_values: f64,
    /// Dropout after the projection and the MLP (`--drop`).
    pub drop: f64,
    /// Dropout on attention weights.
    pub attn_drop: f64,
    /// Stochastic-depth probability of this block.
    pub drop_path: f64,
    pub init: WeightInit,
}

/// Multi-head self-attention of the official `Attention` module.
#[derive(Debug)]
pub struct Attention {
    pub qkv: Linear,
    pub q_bias: Option<Tensor>,
    pub v_bias: Option<Tensor>,
    pub q_norm: Option<LayerNorm>,
    pub k_norm: Option<LayerNorm>,
    pub proj: Linear,
    num_heads: i64,
    scale: f64,
    attn_drop: f64,
    proj_drop: f64,
}

impl Attention {
    pub fn new(p: &nn::Path, c: &BlockConfig) -> Attention {
        let head_dim = c.dim / c.num_heads;
        let all = head_dim * c.num_heads;
        Attention {
            qkv: Linear::new(&(p / "qkv"), c.dim, all * 3, false, c.init),
            q_bias: c
                .qkv_bias
                .then(|| p.var("q_bias", &[all], Init::Const(0.0))),
            v_bias: c
                .qkv_bias
                .then(|| p.var("v_bias", &[all], Init::Const(0.0))),
            q_norm: c.qk_norm.then(|| LayerNorm::new(&(p / "q_norm"), head_dim)),
            k_norm: c.qk_norm.then(|| LayerNorm::new(&(p / "k_norm"), head_dim)),
            proj: Linear::new(&(p / "proj"), all, c.dim, true, c.init),
            num_heads: c.num_heads,
            scale: (head_dim as f64).powf(-0.5),
            attn_drop: c.attn_drop,
            proj_drop: c.drop,
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let s = x.size();
        let (b, n) = (s[0], s[1]);
        let bias = match (&self.q_bias, &self.v_bias) {
            (Some(q), Some(v)) => Some(Tensor::cat(&[q, &v.zeros_like(), v], 0)),
            _ => None,
        };
        let qkv = x
            .linear(&self.qkv.weight, bias.as_ref())
            .reshape([b, n, 3, self.num_heads, -1])
            .permute([2, 0, 3, 1, 4]);
        let (mut q, mut k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        if let Some(qn) = &self.q_norm {
            q = qn.forward(&q);
        }
        if let Some(kn) = &self.k_norm {
            k = kn.forward(&k);
        }
        let q = q * self.scale;
        let attn = q
            .matmul(&k.transpose(-2, -1))
            .softmax(-1, Kind::Float)
            .dropout(self.attn_drop, train);
        let y = attn.matmul(&v).transpose(1, 2).reshape([b, n, -1]);
        self.proj.forward(&y).dropout(self.proj_drop, train)
    }
}

/// `Mlp`: fc1 → GELU → fc2 → dropout (the official code has no dropout after GELU).
#[derive(Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    drop: f64,
}

impl Mlp {
    pub fn new(p: &nn::Path, c: &BlockConfig) -> Mlp {
        let hidden = (c.dim as f64 * c.mlp_ratio) as i64;
        Mlp {
            fc1: Linear::new(&(p / "fc1"), c.dim, hidden, true, c.init),
            fc2: Linear::new(&(p / "fc2"), hidden, c.dim, true, c.init),
            drop: c.drop,
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.fc2
            .forward(&gelu(&self.fc1.forward(x)))
            .dropout(self.drop, train)
    }
}

/// Pre-norm block: `x += dp(γ₁·attn(norm1 x)); x += dp(γ₂·mlp(norm2 x))`.
#[derive(Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    pub gamma_1: Option<Tensor>,
    pub gamma_2: Option<Tensor>,
    drop_path: f64,
}

impl Block {
    /// `layer_id` (1-based) scales `attn.proj.weight` and `mlp.fc2.weight` down by
    /// √(2·layer_id), as the official `fix_init_weight` does.
    pub fn new(p: &nn::Path, c: &BlockConfig, layer_id: i64) -> Block {
        let attn = Attention::new(&(p / "attn"), c);
        let mlp = Mlp::new(&(p / "mlp"), c);
        let f = (2.0 * layer_id as f64).sqrt();
        tch::no_grad(|| {
            let _ = attn.proj.weight.shallow_clone().g_div_scalar_(f);
            let _ = mlp.fc2.weight.shallow_clone().g_div_scalar_(f);
        });
        let (gamma_1, gamma_2) = if c.init_values > 0.0 {
            (
                Some(p.var("gamma_1", &[c.dim], Init::Const(c.init_values))),
                Some(p.var("gamma_2", &[c.dim], Init::Const(c.init_values))),
            )
        } else {
            (None, None)
        };
        Block {
            norm1: LayerNorm::new(&(p / "norm1"), c.dim),
            attn,
            norm2: LayerNorm::new(&(p / "norm2"), c.dim),
            mlp,
            gamma_1,
            gamma_2,
            drop_path: c.drop_path,
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = self.attn.forward(&self.norm1.forward(x), train);
        if let Some(g) = &self.gamma_1 {
            y = g * y;
        }
        let x = x + drop_path(&y, self.drop_path, train);
        let mut y = self.mlp.forward(&self.norm2.forward(&x), train);
        if let Some(g) = &self.gamma_2 {
            y = g * y;
        }
        &x + drop_path(&y, self.drop_path, train)
    }
}
