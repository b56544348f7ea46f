//! The smallest training loop: fit `y = 3x - 2` with a line, gradients written by hand.
//!
//! ```text
//! cargo run --release --example tiny_fit
//! ```
//!
//! loss(w, b) = mean((w·x + b − y)²);  ∂loss/∂w = mean(2(ŷ − y)·x);  ∂loss/∂b = mean(2(ŷ − y))

use unroll::tensor::{Rng, Tensor};

fn main() {
    let mut rng = Rng::seed_from_u64(0);
    let x = Tensor::<f32>::rand_uniform(&[64, 1], -1.0, 1.0, &mut rng);
    let noise = Tensor::<f32>::rand_normal(&[64, 1], 0.0, 0.05, &mut rng);
    let y = &(&x * 3.0 - 2.0) + &noise;

    let (mut w, mut b) = (0.0f32, 0.0f32);
    let lr = 0.5;
    for step in 0..=60 {
        let y_hat = &x * w + b;
        let err = &y_hat - &y;
        let loss = err.square().mean_all().item();
        let grad_w = (&err * &x).mean_all().item() * 2.0;
        let grad_b = err.mean_all().item() * 2.0;
        w -= lr * grad_w;
        b -= lr * grad_b;
        if step % 10 == 0 {
            println!("step {step:3}  loss {loss:.5}  w {w:.3}  b {b:.3}");
        }
    }
    println!("fitted y = {w:.3}x + {b:.3} (true: y = 3x - 2)");
}
