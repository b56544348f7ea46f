//! The autograd crate's integration tests, as one test binary (one link instead of one per
//! file): the ops' gradient checks, the tape, and the optimizers (against PyTorch's numbers too).

mod gradcheck_ops;
mod inspect;
mod optim;
mod optim_torch;
mod tape;
