//! Shape rules of the ops that move elements: Reshape, Concat, Split, Slice, Gather,
//! Squeeze, Unsqueeze, Pad.

use gn_onnx::graph::attr;

use super::dim::{product, render, Dim, Term};
use super::rules::{axes, axis, moved_values, Cx};
use super::{here, Fact, Rule};

/// Reshape: 0 copies the input's size on that axis (unless allowzero), −1 takes what
/// the others leave of the input's size.
pub(super) fn reshape(cx: &Cx) -> Rule<Fact> {
    let x = cx.fact(0)?;
    let target = cx.value(1)?;
    let allow_zero = cx.int("allowzero", 0) != 0;
    let mut out = Vec::with_capacity(target.len());
    let mut inferred = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            Dim::Fixed(0) if !allow_zero => match x.shape.get(i) {
                Some(&d) => out.push(d),
                None => return here(format!("target {} copies axis {i} of {}", render(&target), render(&x.shape))),
            },
            Dim::Fixed(-1) if inferred.is_none() => {
                inferred = Some(i);
                out.push(Dim::Fixed(1));
            }
            t if t.is_size() => out.push(t),
            _ => return here(format!("target {} is not a shape", render(&target))),
        }
    }
    let (total, rest) = (product(&x.shape), product(&out));
    if let Some(i) = inferred {
        let left = total.zip(rest.filter(|r| r.coef != 0)).and_then(|(t, r)| t.div(r)).and_then(Term::dim);
        match left {
            Some(d) => out[i] = d,
            None => {
                return here(format!("target {} does not divide the elements of {}", render(&target), render(&x.shape)))
            }
        }
    } else if let (Some(t), Some(r)) = (total, rest) {
        if t != r && (t.coef, r.coef) != (0, 0) {
            return here(format!("target {} does not hold the elements of {}", render(&out), render(&x.shape)));
        }
    }
    Ok(Fact::with_value(out, x.value.clone()))
}

/// Concat: the sizes along `axis` add up, the other axes agree.
pub(super) fn concat(cx: &Cx) -> Rule<Fact> {
    let inputs: Vec<usize> = (0..cx.node.input.len()).filter(|&i| cx.has(i)).collect();
    let Some((&first, rest)) = inputs.split_first() else { return here("has no inputs") };
    let mut shape = cx.shape(first)?.to_vec();
    let Some(a) = attr::get_int(cx.node, "axis") else { return here("has no axis") };
    let a = axis(a, shape.len())?;
    for &i in rest {
        let s = cx.shape(i)?;
        if s.len() != shape.len() || s.iter().zip(&shape).enumerate().any(|(k, (x, y))| k != a && x != y) {
            return here(format!("inputs {} and {} differ off axis {a}", render(&shape), render(s)));
        }
        match shape[a].add(s[a]) {
            Some(d) => shape[a] = d,
            None => {
                return here(format!(
                    "sizes {} and {} on axis {a} do not add up to a fixed size or a multiple of N",
                    shape[a], s[a]
                ))
            }
        }
    }
    let value = if shape.len() == 1 {
        inputs.iter().map(|&i| cx.value(i).ok()).collect::<Option<Vec<_>>>().map(|v| v.concat())
    } else {
        None
    };
    Ok(Fact::with_value(shape, value))
}

/// Split along `axis` into the `split` sizes (attribute, or input from opset 13), or
/// into equal parts (`num_outputs` from opset 18: the last part smaller).
pub(super) fn split(cx: &Cx) -> Rule<Vec<Fact>> {
    let x = cx.shape(0)?;
    let a = axis(cx.int("axis", 0), x.len())?;
    let parts = cx.node.output.len();
    let sizes: Vec<Dim> = match cx.attr_or_input("split", 1)? {
        Some(split) => {
            let sum = split.iter().try_fold(0i64, |acc, &s| acc.checked_add(s).filter(|_| s >= 0));
            if split.len() != parts || sum.map(Dim::Fixed) != Some(x[a]) {
                return here(format!("split {split:?} into {parts} outputs does not cover size {}", x[a]));
            }
            split.into_iter().map(Dim::Fixed).collect()
        }
        None if parts == 0 => return here("has no outputs"),
        None => {
            let num = cx.int("num_outputs", parts as i64);
            match x[a] {
                Dim::Fixed(d) if num > 0 && num as usize == parts => {
                    let chunk = d.div_euclid(num) + (d.rem_euclid(num) != 0) as i64;
                    if cx.attr("num_outputs").is_none() && d % num != 0 {
                        return here(format!("size {d} does not split into {num} equal parts"));
                    }
                    (0..num).map(|i| Dim::Fixed(d.saturating_sub(i.saturating_mul(chunk)).clamp(0, chunk))).collect()
                }
                d => match d.div(Dim::Fixed(parts as i64)) {
                    Some(part) if num as usize == parts => vec![part; parts],
                    _ => return here(format!("size {d} does not split into {parts} equal parts")),
                },
            }
        }
    };
    Ok(sizes
        .into_iter()
        .map(|s| {
            let mut shape = x.to_vec();
            shape[a] = s;
            Fact::shaped(shape)
        })
        .collect())
}

/// The indices Slice takes along an axis of size `d`: start, step and count, with
/// negative indices counted from the end and both ends clamped (ONNX's rule).
pub(super) fn slice_axis(d: i64, start: i64, end: i64, step: i64) -> (i128, i128, i128) {
    let (d, step) = (d as i128, step as i128);
    let norm = |v: i64| if v < 0 { v as i128 + d } else { v as i128 };
    let (s, e) = if step > 0 {
        (norm(start).clamp(0, d), norm(end).clamp(0, d))
    } else {
        (norm(start).clamp(0, (d - 1).max(0)), norm(end).clamp(-1, d - 1))
    };
    let count = if step > 0 { (e - s + step - 1) / step } else { (s - e + (-step) - 1) / (-step) };
    (s, step, count.max(0))
}

/// The indices `start..end` with step 1 take of an axis of size `d` (Slice's rule, and
/// Shape's for its `start` and `end`).
pub(crate) fn clamped_range(d: i64, start: i64, end: i64) -> std::ops::Range<usize> {
    let (s, _, n) = slice_axis(d, start, end, 1);
    s as usize..(s + n) as usize
}

/// Slice: starts, ends, axes, steps as inputs (opset 10 on) or attributes (before).
pub(super) fn slice(cx: &Cx) -> Rule<Fact> {
    let x = cx.fact(0)?;
    let (starts, ends, axes_list, steps) = if cx.opset >= 10 {
        let optional = |i: usize| if cx.has(i) { cx.ints(i).map(Some) } else { Ok(None) };
        (cx.ints(1)?, cx.ints(2)?, optional(3)?, optional(4)?)
    } else {
        let attr = |name: &str| cx.ints_attr(name);
        (attr("starts").unwrap_or_default(), attr("ends").unwrap_or_default(), attr("axes"), None)
    };
    let count = starts.len();
    let axes_list = axes_list.unwrap_or_else(|| (0..count as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; count]);
    if ends.len() != count || axes_list.len() != count || steps.len() != count {
        return here("starts, ends, axes and steps differ in length");
    }
    let axes_list: Vec<usize> = axes_list.iter().map(|&a| axis(a, x.shape.len())).collect::<Rule<_>>()?;
    let mut shape = x.shape.clone();
    let mut from: Vec<(usize, i128, i128)> = (0..shape.len()).map(|a| (a, 0, 1)).collect();
    for k in 0..count {
        let (a, step) = (axes_list[k], steps[k]);
        if step == 0 {
            return here("a step is 0");
        }
        match shape[a] {
            Dim::Fixed(d) => {
                let (s, step, n) = slice_axis(d, starts[k], ends[k], step);
                shape[a] = Dim::Fixed(n as i64);
                from[a] = (a, s, step);
            }
            // The whole of a batch axis: start 0, an end past any size, step 1.
            d if starts[k] == 0 && ends[k] >= i32::MAX as i64 && step == 1 => shape[a] = d,
            d => {
                return here(format!(
                    "slicing {}..{} step {step} of axis {a} of size {d} does not give a fixed size or a multiple of N",
                    starts[k], ends[k]
                ))
            }
        }
    }
    let value = x.value.as_ref().and_then(|v| moved_values(v, &x.shape, &shape, &from));
    Ok(Fact::with_value(shape, value))
}

/// Gather along `axis`: data[:axis] ++ indices ++ data[axis + 1:].
pub(super) fn gather(cx: &Cx) -> Rule<Fact> {
    let (data, indices) = (cx.fact(0)?, cx.fact(1)?);
    let a = axis(cx.int("axis", 0), data.shape.len())?;
    let mut shape = data.shape[..a].to_vec();
    shape.extend(&indices.shape);
    shape.extend(&data.shape[a + 1..]);
    let value = match (&data.value, data.shape.len()) {
        (Some(v), 1) => cx.ints(1).ok().and_then(|idx| {
            idx.iter()
                .map(|&i| {
                    let i = if i < 0 { i.checked_add(v.len() as i64)? } else { i };
                    v.get(usize::try_from(i).ok()?).copied()
                })
                .collect()
        }),
        _ => None,
    };
    Ok(Fact::with_value(shape, value))
}

/// Squeeze: the listed axes (attribute, or input from opset 13), each of size 1, or
/// every axis of size 1.
pub(super) fn squeeze(cx: &Cx) -> Rule<Fact> {
    let x = cx.fact(0)?;
    let shape = match cx.attr_or_input("axes", 1)? {
        Some(list) => {
            let removed = axes(&list, x.shape.len())?;
            if let Some(&a) = removed.iter().find(|&&a| x.shape[a] != Dim::Fixed(1)) {
                return here(format!("squeezes axis {a} of size {}", x.shape[a]));
            }
            x.shape.iter().enumerate().filter(|(i, _)| !removed.contains(i)).map(|(_, &d)| d).collect()
        }
        None => x.shape.iter().copied().filter(|&d| d != Dim::Fixed(1)).collect(),
    };
    Ok(Fact::with_value(shape, x.value.clone()))
}

/// Unsqueeze: a size-1 axis at each listed position of the output (attribute, or input
/// from opset 13).
pub(super) fn unsqueeze(cx: &Cx) -> Rule<Fact> {
    let x = cx.fact(0)?;
    let Some(list) = cx.attr_or_input("axes", 1)? else { return here("has no axes") };
    let rank = x.shape.len() + list.len();
    let added = axes(&list, rank)?;
    let mut rest = x.shape.iter();
    let shape = (0..rank)
        .map(|i| if added.contains(&i) { Some(Dim::Fixed(1)) } else { rest.next().copied() })
        .collect::<Option<Vec<Dim>>>();
    match shape {
        Some(shape) => Ok(Fact::with_value(shape, x.value.clone())),
        None => here("axes do not fit the output rank"),
    }
}

/// Pad: each axis grows by its begin and end pads (attribute before opset 11, input
/// after, with the axes input of opset 18).
pub(super) fn pad(cx: &Cx) -> Rule<Fact> {
    let x = cx.shape(0)?;
    let Some(pads) = cx.attr_or_input("pads", 1)? else { return here("has no pads") };
    let padded: Vec<usize> = if cx.has(3) { axes(&cx.ints(3)?, x.len())? } else { (0..x.len()).collect() };
    if pads.len() != 2 * padded.len() {
        return here(format!("{} pads for {} axes", pads.len(), padded.len()));
    }
    let mut shape = x.to_vec();
    for (k, &a) in padded.iter().enumerate() {
        let grown = pads[k].checked_add(pads[k + padded.len()]).and_then(|p| shape[a].add(Dim::Fixed(p)));
        match grown {
            Some(d) if d.is_size() => shape[a] = d,
            _ => {
                return here(format!(
                    "padding axis {a} of size {} by {} and {}",
                    shape[a],
                    pads[k],
                    pads[k + padded.len()]
                ))
            }
        }
    }
    Ok(Fact::shaped(shape))
}
