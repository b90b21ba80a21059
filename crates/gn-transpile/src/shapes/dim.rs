//! Sizes: a fixed number or k·N, and their checked arithmetic.

use std::fmt;

use super::{here, Rule};

/// One dimension of a value, or one element of a small integer value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// A size known before running.
    Fixed(i64),
    /// k·N, for the batch N of the graph inputs (k ≠ 0).
    Batch(i64),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Batch(1) => write!(f, "N"),
            Dim::Batch(k) => write!(f, "{k}·N"),
        }
    }
}

/// c·N^p: a product of dims (the size of a tensor, the total a Reshape keeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Term {
    pub(super) coef: i64,
    pub(super) power: u32,
}

impl Term {
    pub(super) const ONE: Term = Term { coef: 1, power: 0 };

    pub(super) fn mul(self, o: Term) -> Option<Term> {
        Some(Term { coef: self.coef.checked_mul(o.coef)?, power: self.power.checked_add(o.power)? })
    }

    /// self / o when it is exact.
    pub(super) fn div(self, o: Term) -> Option<Term> {
        if self.coef == 0 {
            return Some(Term { coef: 0, power: 0 });
        }
        if o.coef == 0 || self.power < o.power || self.coef.checked_rem(o.coef)? != 0 {
            return None;
        }
        Some(Term { coef: self.coef.checked_div(o.coef)?, power: self.power - o.power })
    }

    pub(super) fn dim(self) -> Option<Dim> {
        match (self.coef, self.power) {
            (0, _) => Some(Dim::Fixed(0)),
            (c, 0) => Some(Dim::Fixed(c)),
            (c, 1) => Some(Dim::Batch(c)),
            _ => None,
        }
    }
}

impl Dim {
    pub(super) fn term(self) -> Term {
        match self {
            Dim::Fixed(c) => Term { coef: c, power: 0 },
            Dim::Batch(k) => Term { coef: k, power: 1 },
        }
    }

    pub(super) fn fixed(self) -> Option<i64> {
        match self {
            Dim::Fixed(n) => Some(n),
            Dim::Batch(_) => None,
        }
    }

    /// k·N with k = 0 is the size 0.
    pub(super) fn batch(k: i64) -> Dim {
        if k == 0 {
            Dim::Fixed(0)
        } else {
            Dim::Batch(k)
        }
    }

    pub(super) fn add(self, o: Dim) -> Option<Dim> {
        match (self, o) {
            (Dim::Fixed(a), Dim::Fixed(b)) => a.checked_add(b).map(Dim::Fixed),
            (Dim::Batch(a), Dim::Batch(b)) => a.checked_add(b).map(Dim::batch),
            (Dim::Batch(_), Dim::Fixed(0)) => Some(self),
            (Dim::Fixed(0), Dim::Batch(_)) => Some(o),
            _ => None,
        }
    }

    pub(super) fn neg(self) -> Option<Dim> {
        match self {
            Dim::Fixed(a) => a.checked_neg().map(Dim::Fixed),
            Dim::Batch(k) => k.checked_neg().map(Dim::Batch),
        }
    }

    pub(super) fn sub(self, o: Dim) -> Option<Dim> {
        self.add(o.neg()?)
    }

    pub(super) fn mul(self, o: Dim) -> Option<Dim> {
        self.term().mul(o.term())?.dim()
    }

    /// self / o when it is exact.
    pub(super) fn div(self, o: Dim) -> Option<Dim> {
        self.term().div(o.term())?.dim()
    }

    /// Whether the dim is a size: at least 0, and k·N with k > 0.
    pub(super) fn is_size(self) -> bool {
        match self {
            Dim::Fixed(n) => n >= 0,
            Dim::Batch(k) => k > 0,
        }
    }
}

/// The product of `dims` (the size of a tensor of that shape).
pub(super) fn product(dims: &[Dim]) -> Option<Term> {
    dims.iter().try_fold(Term::ONE, |acc, d| acc.mul(d.term()))
}

/// The product of `dims` as one dim, if it is fixed or a multiple of N.
pub(super) fn product_dim(dims: &[Dim]) -> Rule<Dim> {
    match product(dims).and_then(Term::dim) {
        Some(d) => Ok(d),
        None => here(format!("the product of {} is not a fixed size or a multiple of N", render(dims))),
    }
}

pub(super) fn render(dims: &[Dim]) -> String {
    let inner: Vec<String> = dims.iter().map(Dim::to_string).collect();
    format!("[{}]", inner.join(", "))
}

/// The numpy broadcast of two shapes.
pub(super) fn broadcast(a: &[Dim], b: &[Dim]) -> Rule<Vec<Dim>> {
    let rank = a.len().max(b.len());
    let at = |s: &[Dim], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { Dim::Fixed(1) };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Ok(x),
            (x, Dim::Fixed(1)) => Ok(x),
            (Dim::Fixed(1), y) => Ok(y),
            _ => here(format!("{} and {} do not broadcast", render(a), render(b))),
        })
        .collect()
}
