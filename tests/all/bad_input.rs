//! Bad input across the public API, as a hostile but fair user would give it: every case is
//! refused with a message that names the op and what was wrong (a panic for a programmer's
//! error, an `Err` for anything read from outside), never a cryptic panic from deep inside,
//! never a silently wrong answer. Each case pins its message.
//!
//! The crates' own suites check their ops in depth (`crates/tensor/tests/all/errors.rs`, the
//! `rnn` and `autograd` tests); this one walks the whole surface a user meets, through
//! `unroll`, in one place.

use std::collections::HashMap;
use std::path::PathBuf;

use unroll::autograd::optim::{
    Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, AdamWConfig, Optimizer, RmsProp,
    RmsPropConfig, Sgd, SgdConfig,
};
use unroll::autograd::{clip_grad_norm, clip_grad_value, Param, Tape};
use unroll::rnn::io::{
    load_checkpoint, load_safetensors, load_state_dict, read_safetensors, save_safetensors,
    LoadError,
};
use unroll::rnn::{
    cross_entropy, dropout, l1_loss, mse_loss, nll_loss, padding_mask, AdditiveAttention, Cell,
    DotAttention, Embedding, Gru, GruCell, Layer, LayerConfig, Linear, Lstm, LstmCell, Module, Rnn,
    RnnCell,
};
use unroll::tensor::{Rng, Tensor};

/// The message of the panic `f` raises (and that it does panic).
fn panic_message<R>(f: impl FnOnce() -> R) -> String {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .err()
        .expect("no panic: the bad input was accepted");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .expect("a message")
}

/// A bad call and the message it must panic with.
type Case<'a> = (&'a str, Box<dyn FnOnce() + 'a>);

/// Runs every `(expected message, case)` and reports all that fail, not just the first.
fn refused(cases: Vec<Case<'_>>) {
    let count = cases.len();
    let mut wrong = vec![];
    for (expected, case) in cases {
        let got = panic_message(case);
        if got != expected {
            wrong.push(format!("expected: {expected}\n     got: {got}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {count} cases:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

fn rng() -> Rng {
    Rng::seed_from_u64(0)
}

fn t(shape: &[usize]) -> Tensor<f64> {
    Tensor::zeros(shape)
}

#[test]
fn tensors() {
    refused(vec![
        (
            "from_vec: data of length 5 does not fit shape [2, 3] (6 elements)",
            Box::new(|| {
                Tensor::from_vec(vec![0.0f32; 5], &[2, 3]);
            }),
        ),
        (
            "zeros: shape [4294967296, 4294967296] has more elements than this machine can address",
            Box::new(|| {
                t(&[1 << 32, 1 << 32]);
            }),
        ),
        (
            "ones: shape [18446744073709551615] has more elements than this machine can address",
            Box::new(|| {
                Tensor::<f32>::ones(&[usize::MAX]);
            }),
        ),
        (
            "reshape: cannot reshape [2, 3] (6 elements) into [4] (4 elements)",
            Box::new(|| {
                t(&[2, 3]).reshape(&[4]);
            }),
        ),
        (
            "add: shapes [2, 3] and [4] cannot be broadcast together",
            Box::new(|| {
                let _ = t(&[2, 3]).add(&t(&[4]));
            }),
        ),
        (
            "matmul: lhs [3, 4] and rhs [5, 2] do not agree on the inner dimension",
            Box::new(|| {
                t(&[3, 4]).matmul(&t(&[5, 2]));
            }),
        ),
        (
            "index_select: index -1 is out of range for a dim of size 3 (0..3)",
            Box::new(|| {
                t(&[3, 2]).index_select(0, &Tensor::from_vec(vec![-1i64], &[1]));
            }),
        ),
        (
            "gather: index -1 is out of range for a dim of size 2 (0..2)",
            Box::new(|| {
                t(&[2, 2]).gather(1, &Tensor::from_vec(vec![0i64, -1], &[1, 2]));
            }),
        ),
        (
            "softmax: dim 2 is out of range for a tensor of rank 2",
            Box::new(|| {
                t(&[2, 3]).softmax(2);
            }),
        ),
        (
            "item: expected a tensor with one element, got shape [2]",
            Box::new(|| {
                t(&[2]).item();
            }),
        ),
        (
            "arange: step 0 cannot go from 0 to 1",
            Box::new(|| {
                Tensor::<f64>::arange(0.0, 1.0, 0.0);
            }),
        ),
    ]);
    // From outside the program: an Err, not a panic.
    assert!(Tensor::<f32>::try_from_vec(vec![], &[0, 1 << 40, 1 << 40]).is_err());
    assert!(Tensor::<f32>::try_from_vec(vec![1.0], &[2]).is_err());
}

#[test]
fn variables_and_parameters() {
    let tape = Tape::<f64>::new();
    let other = Tape::<f64>::new();
    let x = tape.var(t(&[2, 3]));
    let y = other.var(t(&[2, 3]));
    let w = Param::new("w", t(&[2, 2]));
    refused(vec![
        (
            "add: shapes [2, 3] and [3, 2] cannot be broadcast together",
            Box::new(|| {
                let _ = &x + &tape.var(t(&[3, 2]));
            }),
        ),
        (
            "add: variables from two different tapes were mixed; all inputs of one computation \
             must come from the same Tape",
            Box::new(|| {
                let _ = &x + &y;
            }),
        ),
        (
            "backward: called on a variable of shape [2, 3], which is not a scalar; reduce it to \
             one element (e.g. with sum_all) or pass a seed gradient to backward_with",
            Box::new(|| {
                x.backward();
            }),
        ),
        (
            "backward: this variable was not recorded (it is a constant, detached, or made in \
             no-grad mode), so there is nothing to differentiate",
            Box::new(|| {
                tape.constant(t(&[])).backward();
            }),
        ),
        (
            "set_value: parameter 'w' has shape [2, 2], the new value has shape [4]",
            Box::new(|| w.set_value(t(&[4]))),
        ),
        (
            "set_grad: parameter 'w' has shape [2, 2], the gradient has shape [5]",
            Box::new(|| w.set_grad(Some(t(&[5])))),
        ),
        (
            "clip_grad_norm: max_norm -1 must be >= 0",
            Box::new(|| {
                clip_grad_norm(std::slice::from_ref(&w), -1.0);
            }),
        ),
        (
            "clip_grad_value: clip NaN must be >= 0",
            Box::new(|| clip_grad_value(std::slice::from_ref(&w), f64::NAN)),
        ),
    ]);
}

#[test]
fn optimizers() {
    let p = || vec![Param::new("w", Tensor::<f64>::zeros(&[2]))];
    refused(vec![
        (
            "Sgd: Invalid learning rate: -1 (must be finite and >= 0)",
            Box::new(|| {
                Sgd::new(
                    p(),
                    SgdConfig {
                        lr: -1.0,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "Sgd: Nesterov momentum requires a momentum and zero dampening",
            Box::new(|| {
                Sgd::new(
                    p(),
                    SgdConfig {
                        nesterov: true,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "Adam: Invalid beta parameter at index 0: 1",
            Box::new(|| {
                Adam::new(
                    p(),
                    AdamConfig {
                        beta1: 1.0,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "AdamW: Invalid epsilon value: NaN (must be finite and >= 0)",
            Box::new(|| {
                AdamW::new(
                    p(),
                    AdamWConfig {
                        eps: f64::NAN,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "RmsProp: Invalid momentum value: -0.9 (must be finite and >= 0)",
            Box::new(|| {
                RmsProp::new(
                    p(),
                    RmsPropConfig {
                        momentum: -0.9,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "Adagrad: Invalid weight_decay value: -0.1 (must be finite and >= 0)",
            Box::new(|| {
                Adagrad::new(
                    p(),
                    AdagradConfig {
                        weight_decay: -0.1,
                        ..Default::default()
                    },
                );
            }),
        ),
        (
            "Adam: optimizer got an empty parameter list",
            Box::new(|| {
                Adam::<f32>::new(vec![], AdamConfig::default());
            }),
        ),
        (
            "Sgd: Invalid learning rate: inf (must be finite and >= 0)",
            Box::new(|| {
                Sgd::new(p(), SgdConfig::default()).set_lr(f64::INFINITY);
            }),
        ),
    ]);
}

#[test]
fn layers_and_cells() {
    let lstm = Lstm::<f64>::lstm(LayerConfig::new(3, 4), &mut rng());
    let bi = Gru::<f64>::gru(LayerConfig::new(3, 4).bidirectional(true), &mut rng());
    let tape = Tape::<f64>::new();
    let x = tape.constant(t(&[5, 2, 3]));
    refused(vec![
        (
            "Layer: hidden_size must be greater than zero",
            Box::new(|| {
                Lstm::<f32>::lstm(LayerConfig::new(3, 0), &mut rng());
            }),
        ),
        (
            "Layer: dropout 1.5 is not in [0, 1]",
            Box::new(|| {
                Gru::<f32>::gru(
                    LayerConfig::new(3, 4).num_layers(2).dropout(1.5),
                    &mut rng(),
                );
            }),
        ),
        (
            "Layer: dropout 0.2 with num_layers 1 would do nothing: dropout acts between stacked \
             layers only (PyTorch warns of this)",
            Box::new(|| {
                Rnn::<f32>::rnn(LayerConfig::new(3, 4).dropout(0.2), &mut rng());
            }),
        ),
        (
            "Layer::forward: input of shape [5, 2, 4] does not fit input_size 3 (expected [seq, \
             batch, input], or [seq, input] unbatched)",
            Box::new(|| {
                lstm.forward(&tape.constant(t(&[5, 2, 4])));
            }),
        ),
        (
            "Layer::forward: the sequence is empty (input of shape [0, 2, 3])",
            Box::new(|| {
                lstm.forward(&tape.constant(t(&[0, 2, 3])));
            }),
        ),
        (
            "Layer::forward: 3 lengths for a batch of 2",
            Box::new(|| {
                lstm.forward_with(&x, None, Some(&[5, 5, 5]));
            }),
        ),
        (
            "Layer::forward: length 6 is not in 1..=5 (the sequence length)",
            Box::new(|| {
                lstm.forward_with(&x, None, Some(&[6, 1]));
            }),
        ),
        (
            "Layer::forward: initial state part 1 has shape [1, 2, 3], expected [1, 2, 4] \
             ([layers·directions, batch, size])",
            Box::new(|| {
                let init = (tape.constant(t(&[1, 2, 4])), tape.constant(t(&[1, 2, 3])));
                lstm.forward_with(&x, Some(&init), None);
            }),
        ),
        (
            "Layer::stream: a bidirectional layer needs the whole sequence, it cannot stream",
            Box::new(|| {
                bi.stream();
            }),
        ),
        (
            "Layer::tbptt: the chunk length k must be at least 1",
            Box::new(|| {
                lstm.tbptt(&t(&[5, 2, 3]), 0, None, |_| {});
            }),
        ),
        (
            "LstmCell::step: x_t of shape [2, 5] does not fit input_size 3 (expected [batch, 3], \
             or [3] unbatched)",
            Box::new(|| {
                let cell = LstmCell::<f64>::new(3, 4, &mut rng());
                let s = cell.zero_state(&tape, 2);
                cell.step(&tape.constant(t(&[2, 5])), &s);
            }),
        ),
        (
            "GruCell::step: state part 0 of shape [3, 4] does not fit x_t of shape [2, 3] \
             (expected [2, 4])",
            Box::new(|| {
                let cell = GruCell::<f64>::new(3, 4, &mut rng());
                cell.step(&tape.constant(t(&[2, 3])), &tape.constant(t(&[3, 4])));
            }),
        ),
        (
            "LstmCell: proj_size 4 has to be smaller than hidden_size 4",
            Box::new(|| {
                LstmCell::<f64>::with_projection(3, 4, 4, true, &mut rng());
            }),
        ),
        (
            "Layer::gru: proj_size argument is only supported for LSTM, not RNN or GRU",
            Box::new(|| {
                Gru::<f64>::gru(LayerConfig::new(3, 4).proj_size(2), &mut rng());
            }),
        ),
    ]);
    // An RNN cell is fine with an empty batch, as PyTorch is.
    let cell = RnnCell::<f64>::new(3, 4, &mut rng());
    let h = cell.step(&tape.constant(t(&[0, 3])), &tape.constant(t(&[0, 4])));
    assert_eq!(h.shape(), [0, 4]);
}

#[test]
fn modules_losses_and_attention() {
    let tape = Tape::<f64>::new();
    let lin = Linear::<f64>::new(3, 2, true, &mut rng());
    let emb = Embedding::<f64>::new(10, 4, None, &mut rng());
    let pred = tape.var(t(&[4, 1]));
    refused(vec![
        (
            "Embedding: index -1 is out of range for 10 embeddings (0..10)",
            Box::new(|| {
                emb.forward(&tape, &Tensor::from_vec(vec![-1i64], &[1]));
            }),
        ),
        (
            "Embedding: index 10 is out of range for 10 embeddings (0..10)",
            Box::new(|| {
                emb.forward(&tape, &Tensor::from_vec(vec![3i64, 10], &[2]));
            }),
        ),
        (
            "mse_loss: prediction [4, 1] and target [4] have different shapes (PyTorch would \
             broadcast them to a wrong loss)",
            Box::new(|| {
                mse_loss(&pred, t(&[4]));
            }),
        ),
        (
            "l1_loss: prediction [4, 1] and target [1, 4] have different shapes (PyTorch would \
             broadcast them to a wrong loss)",
            Box::new(|| {
                l1_loss(&pred, t(&[1, 4]));
            }),
        ),
        (
            "nll_loss: target 3 is not a class in 0..3",
            Box::new(|| {
                nll_loss(
                    &tape.var(t(&[2, 3])),
                    &Tensor::from_vec(vec![0i64, 3], &[2]),
                );
            }),
        ),
        (
            "cross_entropy: scores [2, 3] and targets [3] do not fit (expected [N, C] and [N], \
             [N, C, d…] and [N, d…], or [C] and [])",
            Box::new(|| {
                cross_entropy(
                    &tape.var(t(&[2, 3])),
                    &Tensor::from_vec(vec![0i64; 3], &[3]),
                );
            }),
        ),
        (
            "dropout: p = 1.5 is not in [0, 1]",
            Box::new(|| {
                dropout(&pred, 1.5);
            }),
        ),
        (
            "padding_mask: length 0 is not in 1..=3",
            Box::new(|| {
                padding_mask(&[2, 0], 3);
            }),
        ),
        (
            "AdditiveAttention: query [2, 4], keys [2, 3, 4], values [3, 3, 4] do not fit \
             (expected [B, Q], [B, S, K], [B, S, V] and a [B, S] mask, S > 0)",
            Box::new(|| {
                let a = AdditiveAttention::<f64>::new(4, 4, 2, &mut rng());
                a.forward(
                    &tape.var(t(&[2, 4])),
                    &tape.var(t(&[2, 3, 4])),
                    &tape.var(t(&[3, 3, 4])),
                    None,
                );
            }),
        ),
        (
            "DotAttention: the query has 2 features after projection, the keys 4",
            Box::new(|| {
                DotAttention::<f64>::dot(false).forward(
                    &tape.var(t(&[2, 2])),
                    &tape.var(t(&[2, 3, 4])),
                    &tape.var(t(&[2, 3, 4])),
                    None,
                );
            }),
        ),
    ]);
    assert_eq!(
        panic_message(|| lin.forward(&tape.var(t(&[2, 5])))),
        "Linear: input of shape [2, 5] does not fit in_features 3 (weight [2, 3])"
    );
}

/// A fresh directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let d =
            std::env::temp_dir().join(format!("unroll-bad-input-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn loaders_return_errors() {
    let dir = Dir::new("loaders");
    let model = Lstm::<f32>::lstm(LayerConfig::new(3, 4), &mut rng());
    let before: Vec<Vec<f32>> = model.params().iter().map(|p| p.value().to_vec()).collect();
    let weights = dir.0.join("w.safetensors");
    save_safetensors(&model, &weights).unwrap();
    let bytes = std::fs::read(&weights).unwrap();
    let write = |name: &str, data: &[u8]| {
        let path = dir.0.join(name);
        std::fs::write(&path, data).unwrap();
        path
    };
    let cases: Vec<(&str, Result<(), LoadError>)> = vec![
        (
            "cannot read",
            load_safetensors(&model, dir.0.join("missing.safetensors")),
        ),
        ("cannot read", load_safetensors(&model, &dir.0)),
        (
            "is not a valid safetensors file",
            load_safetensors(&model, write("text", b"hello")),
        ),
        (
            "is not a valid safetensors file",
            load_safetensors(&model, write("empty", b"")),
        ),
        (
            "is not a valid safetensors file",
            load_safetensors(&model, write("cut", &bytes[..bytes.len() / 2])),
        ),
        ("is corrupted", {
            let mut b = bytes.clone();
            let last = b.len() - 1;
            b[last] ^= 1;
            load_safetensors(&model, write("flipped", &b))
        }),
        (
            "has shape [16, 3] in the file, the model expects [20, 3]",
            load_safetensors(
                &Lstm::<f32>::lstm(LayerConfig::new(3, 5), &mut rng()),
                &weights,
            ),
        ),
        (
            "is not an Unroll checkpoint",
            load_checkpoint(
                &weights,
                &model,
                &mut Adam::new(model.params(), AdamConfig::default()),
            )
            .map(|_| ()),
        ),
        (
            "missing tensor 'weight_ih_l0'",
            load_state_dict(&model, &HashMap::new()),
        ),
    ];
    for (expected, result) in cases {
        let err = result.expect_err(expected).to_string();
        assert!(err.contains(expected), "«{err}» does not say «{expected}»");
    }
    let after: Vec<Vec<f32>> = model.params().iter().map(|p| p.value().to_vec()).collect();
    assert_eq!(before, after, "a failed load changed the model");
    // A cell is a Module too: the same refusals apply to it.
    let cell = LstmCell::<f32>::new(2, 4, &mut rng());
    assert!(matches!(
        load_safetensors(&cell, &weights),
        Err(LoadError::Missing { .. })
    ));
    assert!(
        read_safetensors::<f64>(&weights).is_ok(),
        "f32 files read as f64"
    );
}

#[test]
fn custom_cells_must_list_their_parameters() {
    /// A cell that forgets to list its gain.
    struct Forgetful(RnnCell<f64>, Param<f64>);
    impl Cell<f64> for Forgetful {
        type State = unroll::autograd::Var<f64>;
        fn input_size(&self) -> usize {
            self.0.input_size()
        }
        fn hidden_size(&self) -> usize {
            self.0.hidden_size()
        }
        fn step(
            &self,
            x: &unroll::autograd::Var<f64>,
            h: &unroll::autograd::Var<f64>,
        ) -> unroll::autograd::Var<f64> {
            self.0.step(x, h) * &self.1
        }
    }
    impl Module<f64> for Forgetful {
        fn named_params(&self) -> Vec<(String, Param<f64>)> {
            self.0.named_params()
        }
    }
    let msg = panic_message(|| {
        Layer::new(LayerConfig::new(2, 3), &mut rng(), |i, rng| {
            Forgetful(
                RnnCell::new(i, 3, rng),
                Param::new("gain", Tensor::ones(&[3])),
            )
        })
    });
    assert!(
        msg.starts_with("Layer: the cell's step uses parameter 'gain' of shape [3]"),
        "{msg}"
    );
}
