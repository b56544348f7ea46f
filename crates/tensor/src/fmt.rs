//! `Display` and `Debug`: the shape and dtype, then the values, abbreviated like PyTorch's
//! (the first and last three entries of each dim) when there are more than 1000.

use std::fmt;

use crate::element::Element;
use crate::tensor::Tensor;

const SUMMARIZE_ABOVE: usize = 1000;
const EDGE_ITEMS: usize = 3;

impl<T: Element> fmt::Display for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Tensor{:?} {}", self.shape, T::DTYPE)?;
        let summarize = self.numel() > SUMMARIZE_ABOVE;
        write_nested(f, self, summarize, 0)
    }
}

impl<T: Element> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn write_nested<T: Element>(
    f: &mut fmt::Formatter<'_>,
    t: &Tensor<T>,
    summarize: bool,
    depth: usize,
) -> fmt::Result {
    if t.rank() == 0 {
        return write!(f, "{}", t.item());
    }
    let n = t.shape()[0];
    let shown: Vec<Option<usize>> = if summarize && n > 2 * EDGE_ITEMS {
        (0..EDGE_ITEMS)
            .map(Some)
            .chain(std::iter::once(None))
            .chain((n - EDGE_ITEMS..n).map(Some))
            .collect()
    } else {
        (0..n).map(Some).collect()
    };
    f.write_str("[")?;
    for (k, entry) in shown.iter().enumerate() {
        if k > 0 {
            if t.rank() > 1 {
                write!(f, ",\n{:width$}", "", width = depth + 1)?;
            } else {
                f.write_str(", ")?;
            }
        }
        match entry {
            None => f.write_str("...")?,
            Some(i) if t.rank() == 1 => write!(f, "{}", t.get(&[*i]))?,
            Some(i) => write_nested(f, &t.select(0, *i), summarize, depth + 1)?,
        }
    }
    f.write_str("]")
}
