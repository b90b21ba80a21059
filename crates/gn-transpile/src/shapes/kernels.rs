//! Shape rules of the ops that compute over windows and axes: Conv, ConvTranspose, the
//! pools, Gemm, MatMul, Einsum, reductions, Resize.

use std::collections::BTreeMap;

use gn_onnx::graph::attr;
use gn_onnx::window::{Padding, Window};

use super::dim::{broadcast, product, render, Dim, Term};
use super::rules::{axes, shape_value, Cx};
use super::{fixed_count, here, Fact, Rule, Why};

/// The sliding-window output sizes of Conv and the pools, per spatial axis:
/// ⌊(in + pads − ((k − 1)·d + 1)) / s⌋ + 1 (⌈…⌉ with ceil_mode, dropping a last window
/// that would start in the end padding), or ⌈in / s⌉ with auto_pad SAME_*.
pub(super) fn windows(cx: &Cx, spatial: &[Dim], kernel: &[i64], ceil: bool) -> Rule<Vec<Dim>> {
    let s = spatial.len();
    let Window { strides, dilations, padding } = match Window::of(cx.node, s) {
        Ok(w) => w,
        Err(why) => return here(why),
    };
    let pads = match padding {
        Padding::Explicit(pads) => pads,
        Padding::Same { .. } => Vec::new(),
    };
    if kernel.len() != s {
        return here(format!("the kernel has {} axes, the input {s} spatial axes", kernel.len()));
    }
    let mut out = Vec::with_capacity(s);
    for i in 0..s {
        let (k, stride, d) = (kernel[i] as i128, strides[i] as i128, dilations[i] as i128);
        if k < 1 || stride < 1 || d < 1 {
            return here(format!("kernel {k}, stride {stride} and dilation {d} must be positive"));
        }
        let Some(size) = spatial[i].fixed() else {
            return here(format!("spatial axis {i} has size {}, which is not fixed", spatial[i]));
        };
        let size = size as i128;
        if pads.is_empty() {
            out.push(Dim::Fixed(((size + stride - 1) / stride) as i64));
            continue;
        }
        let (begin, end) = (pads[i] as i128, pads[i + s] as i128);
        if begin < 0 || end < 0 {
            return here(format!("pads {pads:?} are negative"));
        }
        let span = size + begin + end - ((k - 1) * d + 1);
        if span < 0 {
            return here(format!(
                "the window ({k} × dilation {d}) is larger than the padded size {}",
                size + begin + end
            ));
        }
        let mut n = if ceil { (span + stride - 1) / stride } else { span / stride } + 1;
        if ceil && (n - 1) * stride >= size + begin {
            n -= 1;
        }
        match i64::try_from(n) {
            Ok(n) => out.push(Dim::Fixed(n)),
            Err(_) => return here("an output size overflows"),
        }
    }
    Ok(out)
}

/// Conv: [N, C, in…] ⊛ [M, C/group, k…] → [N, M, out…].
pub(super) fn conv(cx: &Cx) -> Rule<Fact> {
    let (x, w) = (cx.shape(0)?, cx.shape(1)?);
    if x.len() < 3 || w.len() != x.len() {
        return here(format!("input {} and weight {} are not [N, C, …] and [M, C/group, …]", render(x), render(w)));
    }
    let weight_kernel: Option<Vec<i64>> = w[2..].iter().map(|d| d.fixed()).collect();
    let Some(kernel) = cx.ints_attr("kernel_shape").or(weight_kernel) else {
        return here(format!("the kernel of weight {} is not fixed", render(w)));
    };
    let mut out = vec![x[0], w[0]];
    out.extend(windows(cx, &x[2..], &kernel, false)?);
    Ok(Fact::shaped(out))
}

/// ConvTranspose: [N, C, in…] with weight [C, M/group, k…] → [N, M, out…], out =
/// s·(in − 1) + output_padding + (k − 1)·d + 1 − pads, or `output_shape`.
pub(super) fn conv_transpose(cx: &Cx) -> Rule<Fact> {
    let (x, w) = (cx.shape(0)?, cx.shape(1)?);
    if x.len() < 3 || w.len() != x.len() {
        return here(format!("input {} and weight {} are not [N, C, …] and [C, M/group, …]", render(x), render(w)));
    }
    let s = x.len() - 2;
    let group = cx.int("group", 1);
    let Some(channels) = w[1].mul(Dim::Fixed(group)).filter(|c| group > 0 && c.is_size()) else {
        return here(format!("{} channels × group {group} is not a size", w[1]));
    };
    let mut out = vec![x[0], channels];
    if let Some(shape) = cx.ints_attr("output_shape") {
        let spatial = &shape[shape.len().saturating_sub(s)..];
        if spatial.len() != s || spatial.iter().any(|&d| d < 0) {
            return here(format!("output_shape {shape:?} does not give {s} spatial sizes"));
        }
        out.extend(spatial.iter().map(|&d| Dim::Fixed(d)));
        return Ok(Fact::shaped(out));
    }
    let weight_kernel: Option<Vec<i64>> = w[2..].iter().map(|d| d.fixed()).collect();
    let Some(kernel) = cx.ints_attr("kernel_shape").or(weight_kernel) else {
        return here(format!("the kernel of weight {} is not fixed", render(w)));
    };
    let list = |name: &str, default: i64, len: usize| cx.ints_attr(name).unwrap_or_else(|| vec![default; len]);
    let (strides, dilations, padding) = (list("strides", 1, s), list("dilations", 1, s), list("output_padding", 0, s));
    let auto_pad = attr::get_string(cx.node, "auto_pad").unwrap_or_default();
    let pads = if auto_pad.starts_with("SAME") { Vec::new() } else { list("pads", 0, 2 * s) };
    if [kernel.len(), strides.len(), dilations.len(), padding.len()] != [s; 4]
        || !(pads.is_empty() || pads.len() == 2 * s)
    {
        return here("kernel_shape, strides, dilations, output_padding or pads do not match the spatial axes");
    }
    for i in 0..s {
        let Some(size) = x[2 + i].fixed() else { return here(format!("spatial axis {i} is not fixed")) };
        let (size, stride) = (size as i128, strides[i] as i128);
        let n = if pads.is_empty() {
            size * stride
        } else {
            let (k, d) = (kernel[i] as i128, dilations[i] as i128);
            stride * (size - 1) + padding[i] as i128 + (k - 1) * d + 1 - pads[i] as i128 - pads[i + s] as i128
        };
        match i64::try_from(n) {
            Ok(n) if n >= 0 => out.push(Dim::Fixed(n)),
            _ => return here(format!("spatial axis {i} has output size {n}")),
        }
    }
    Ok(Fact::shaped(out))
}

/// MaxPool, AveragePool, LpPool: [N, C, in…] → [N, C, out…] (MaxPool's indices alike).
pub(super) fn pool(cx: &Cx) -> Rule<Fact> {
    let x = cx.shape(0)?;
    let Some(kernel) = cx.ints_attr("kernel_shape") else { return here("has no kernel_shape") };
    if x.len() != kernel.len() + 2 {
        return here(format!("input {} does not have {} spatial axes", render(x), kernel.len()));
    }
    let mut out = x[..2].to_vec();
    out.extend(windows(cx, &x[2..], &kernel, cx.int("ceil_mode", 0) != 0)?);
    Ok(Fact::shaped(out))
}

/// Gemm: A [M, K] (transposed with transA) · B [K, N] (transB) → [M, N].
pub(super) fn gemm(cx: &Cx) -> Rule<Fact> {
    let (a, b) = (cx.shape(0)?, cx.shape(1)?);
    let (&[a0, a1], &[b0, b1]) = (a, b) else {
        return here(format!("A {} and B {} are not both of rank 2", render(a), render(b)));
    };
    let m = if cx.int("transA", 0) != 0 { a1 } else { a0 };
    let n = if cx.int("transB", 0) != 0 { b0 } else { b1 };
    Ok(Fact::shaped(vec![m, n]))
}

/// MatMul with numpy's rules: 1-D operands gain and then lose an axis, the leading
/// axes broadcast.
pub(super) fn matmul(a: &[Dim], b: &[Dim]) -> Rule<Vec<Dim>> {
    if a.is_empty() || b.is_empty() {
        return here("an operand is a scalar");
    }
    let a2: Vec<Dim> = if a.len() == 1 { vec![Dim::Fixed(1), a[0]] } else { a.to_vec() };
    let b2: Vec<Dim> = if b.len() == 1 { vec![b[0], Dim::Fixed(1)] } else { b.to_vec() };
    let (ka, kb) = (a2[a2.len() - 1], b2[b2.len() - 2]);
    if ka != kb {
        return here(format!("{} · {}: the inner sizes {ka} and {kb} differ", render(a), render(b)));
    }
    let mut out = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if a.len() > 1 {
        out.push(a2[a2.len() - 2]);
    }
    if b.len() > 1 {
        out.push(b2[b2.len() - 1]);
    }
    Ok(out)
}

/// One term of an Einsum equation: letters before and after an optional ellipsis.
pub(super) fn einsum_term(term: &str) -> Rule<(Vec<char>, bool, Vec<char>)> {
    let (before, ellipsis, after) = match term.find("...") {
        Some(p) => (&term[..p], true, &term[p + 3..]),
        None => (term, false, ""),
    };
    let letters = |s: &str| -> Rule<Vec<char>> {
        match s.chars().all(|c| c.is_ascii_alphabetic()) {
            true => Ok(s.chars().collect()),
            false => here(format!("equation term '{term}' is not letters and one '...'")),
        }
    };
    Ok((letters(before)?, ellipsis, letters(after)?))
}

/// Einsum: each letter's size from the inputs, the output's letters from the explicit
/// right-hand side, or (implicit form) the letters that occur once, alphabetically,
/// after the broadcast ellipsis.
pub(super) fn einsum(cx: &Cx) -> Rule<Vec<Dim>> {
    let equation: String = attr::get_string(cx.node, "equation").unwrap_or_default().split_whitespace().collect();
    let (lhs, rhs) = match equation.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (equation.as_str(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != cx.node.input.len() {
        return here(format!("equation '{equation}' has {} terms for {} inputs", terms.len(), cx.node.input.len()));
    }
    let mut sizes: BTreeMap<char, Dim> = BTreeMap::new();
    let mut counts: BTreeMap<char, usize> = BTreeMap::new();
    let mut ellipsis: Vec<Dim> = Vec::new();
    for (i, term) in terms.iter().enumerate() {
        let shape = cx.shape(i)?;
        let (before, has_ellipsis, after) = einsum_term(term)?;
        let named = before.len() + after.len();
        let spread = shape.len().checked_sub(named).filter(|&e| has_ellipsis || e == 0);
        let Some(spread) = spread else {
            return here(format!("term '{term}' does not match input {i} of shape {}", render(shape)));
        };
        ellipsis = broadcast(&ellipsis, &shape[before.len()..before.len() + spread])?;
        let dims = before.iter().zip(shape).chain(after.iter().zip(&shape[before.len() + spread..]));
        for (&c, &d) in dims {
            *counts.entry(c).or_default() += 1;
            let size = match sizes.get(&c) {
                Some(&s) => broadcast(&[s], &[d])?[0],
                None => d,
            };
            sizes.insert(c, size);
        }
    }
    let (before, has_ellipsis, after) = match rhs {
        Some(r) => einsum_term(r)?,
        None => (Vec::new(), true, counts.iter().filter(|(_, &n)| n == 1).map(|(&c, _)| c).collect()),
    };
    let letter =
        |c: &char| sizes.get(c).copied().ok_or_else(|| Why::Here(format!("output letter '{c}' is in no input")));
    let mut out = before.iter().map(letter).collect::<Rule<Vec<Dim>>>()?;
    if has_ellipsis {
        out.extend(&ellipsis);
    }
    out.extend(after.iter().map(letter).collect::<Rule<Vec<Dim>>>()?);
    Ok(out)
}

/// The shape left by reducing `reduced` axes, kept as 1 with `keep`.
pub(super) fn reduced(x: &[Dim], reduced: &[usize], keep: bool) -> Vec<Dim> {
    x.iter()
        .enumerate()
        .filter_map(|(i, &d)| match (reduced.contains(&i), keep) {
            (false, _) => Some(d),
            (true, true) => Some(Dim::Fixed(1)),
            (true, false) => None,
        })
        .collect()
}

/// Reduce*: the axes (attribute, or input from opset 13 for ReduceSum and 18 for the
/// others), all of them when none are given (unless noop_with_empty_axes).
pub(super) fn reduce(cx: &Cx, op: &str) -> Rule<Fact> {
    let x = cx.fact(0)?;
    let keep = cx.int("keepdims", 1) != 0;
    let list = cx.attr_or_input("axes", 1)?.unwrap_or_default();
    if list.is_empty() && cx.int("noop_with_empty_axes", 0) != 0 {
        return Ok(x.clone());
    }
    let all: Vec<usize> = (0..x.shape.len()).collect();
    let removed = if list.is_empty() { all.clone() } else { axes(&list, x.shape.len())? };
    let shape = reduced(&x.shape, &removed, keep);
    // The product or sum of a shape vector (numel as exporters compute it).
    let value = match (&x.value, x.shape.len(), op) {
        (Some(v), 1, "ReduceProd") => product(v).and_then(Term::dim).map(|d| vec![d]),
        (Some(v), 1, "ReduceSum") => v.iter().try_fold(Dim::Fixed(0), |acc, &d| acc.add(d)).map(|d| vec![d]),
        _ => None,
    };
    Ok(Fact::with_value(shape, value))
}

/// Resize (X, roi, scales, sizes from opset 11; X, scales in opset 10) and Upsample
/// (scales as an attribute, or input from opset 9): ⌊size · scale⌋, or the sizes given.
pub(super) fn resize(cx: &Cx, op: &str) -> Rule<Fact> {
    let x = cx.shape(0)?;
    let resized: Vec<usize> = match cx.ints_attr("axes") {
        Some(list) => axes(&list, x.len())?,
        None => (0..x.len()).collect(),
    };
    let (scales_at, sizes_at) = if op == "Resize" && cx.opset >= 11 { (2, Some(3)) } else { (1, None) };
    let present = |i: usize| cx.has(i) && cx.shape(i).is_ok_and(|s| fixed_count(s) != Some(0));
    let mut shape = x.to_vec();
    if let Some(sizes) = sizes_at.filter(|&i| present(i)) {
        let policy = attr::get_string(cx.node, "keep_aspect_ratio_policy").unwrap_or_else(|| "stretch".into());
        if policy != "stretch" {
            return here(format!("keep_aspect_ratio_policy '{policy}' has no shape rule"));
        }
        let sizes = shape_value(cx, sizes)?;
        if sizes.len() != resized.len() {
            return here(format!("{} sizes for {} axes", sizes.len(), resized.len()));
        }
        for (&a, s) in resized.iter().zip(sizes) {
            shape[a] = s;
        }
        return Ok(Fact::shaped(shape));
    }
    let scales: Vec<f64> = match cx.attr("scales") {
        Some(a) if op == "Upsample" => a.floats.iter().map(|&f| f as f64).collect(),
        _ if present(scales_at) => cx.floats(scales_at)?,
        _ => return here("has neither scales nor sizes known before running"),
    };
    if scales.len() != resized.len() {
        return here(format!("{} scales for {} axes", scales.len(), resized.len()));
    }
    for (&a, &scale) in resized.iter().zip(&scales) {
        shape[a] = match shape[a] {
            d if scale == 1.0 => d,
            Dim::Fixed(d) if scale.is_finite() && scale > 0.0 => {
                let out = (d as f64 * scale).floor();
                if out >= i64::MAX as f64 {
                    return here(format!("scaling size {d} by {scale} overflows"));
                }
                Dim::Fixed(out as i64)
            }
            Dim::Batch(k) if scale.fract() == 0.0 && scale > 0.0 && scale < i64::MAX as f64 => {
                match k.checked_mul(scale as i64) {
                    Some(k) => Dim::Batch(k),
                    None => return here("a scaled size overflows"),
                }
            }
            d => return here(format!("scaling size {d} by {scale} does not give a fixed size or a multiple of N")),
        };
    }
    Ok(Fact::shaped(shape))
}
