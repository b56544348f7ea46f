//! The vanilla RNN's choice of nonlinearity, shared by its cell, its layer configuration and
//! its fused kernel.

/// The nonlinearity of a vanilla RNN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nonlinearity {
    /// tanh (PyTorch's default).
    #[default]
    Tanh,
    /// max(x, 0).
    Relu,
}
