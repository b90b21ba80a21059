//! A measurement as the tables `gn-transpile verify` prints and `gn_transpile.verify`'s
//! `to_markdown()` returns: one text for both.

use std::fmt::Write as _;

use gn_transpile::spikes::Reads;
use gn_transpile::NeuronKind;

use crate::cost::{Cost, Operations};
use crate::Measurement;

/// A count with an SI suffix: 1.23M.
pub fn si(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// An energy in pJ, in the unit that fits: 12.3 nJ.
pub fn energy(pj: f64) -> String {
    match pj {
        v if v >= 1e6 => format!("{:.2} µJ", v / 1e6),
        v if v >= 1e3 => format!("{:.2} nJ", v / 1e3),
        v => format!("{v:.1} pJ"),
    }
}

impl Measurement {
    /// The tables: output MSE and top-1 accuracy per T (IF and GN), the cost per input,
    /// the stateful form's agreement and the τ = L, T = 1 check. `per_layer` adds each
    /// weighted op's and each spiking layer's figures.
    pub fn to_markdown(&self, per_layer: bool) -> String {
        let mut s = String::new();
        let Some(first) = self.curves.first() else { return s };
        let header: Vec<String> = first.mse.iter().map(|p| format!("T={}", p.0)).collect();
        let rule = " --- |".repeat(header.len());
        let _ = writeln!(s, "MSE between the ANN's and the SNN's outputs ({} inputs)", self.images);
        let _ = writeln!(s, "| | {} |\n| --- |{rule}", header.join(" | "));
        for c in &self.curves {
            let row: Vec<String> = c.mse.iter().map(|p| format!("{:.4}", p.1)).collect();
            let _ = writeln!(s, "| {} | {} |", c.label(), row.join(" | "));
        }
        if let Some(ann) = self.ann_accuracy {
            let _ = writeln!(s, "\ntop-1 accuracy (%); ANN {:.2}", ann * 100.0);
            let _ = writeln!(s, "| | {} |\n| --- |{rule}", header.join(" | "));
            for c in &self.curves {
                let row: Vec<String> = c.accuracy.iter().map(|p| format!("{:.2}", p.1 * 100.0)).collect();
                let _ = writeln!(s, "| {} | {} |", c.label(), row.join(" | "));
            }
        }
        if let Some(ops) = &self.operations {
            let e = &ops.energy;
            let _ = writeln!(
                s,
                "\ncost per input (first {} inputs; energy {}: {} pJ per MAC, {} pJ per AC); the ANN: {} MACs, {}, {} bytes of parameters",
                self.layer_images,
                e.name,
                e.mac_pj,
                e.ac_pj,
                si(ops.ann_macs as f64),
                energy(ops.ann_energy_pj),
                ops.footprint
            );
            s.push_str(&cost_table(ops));
            if per_layer {
                self.layer_tables(&mut s);
            }
            if let Some(p) = &self.pareto {
                s.push_str(&p.to_markdown(ops.ann_energy_pj));
            }
        }
        if let Some(st) = &self.stateful {
            let _ = writeln!(
                s,
                "\n--emit stateful (GN τ={}): {} calls against the unrolled model's anytime rows, first {} inputs: max |diff| {:.1e}",
                self.tau, st.calls, st.images, st.max_abs_diff
            );
        }
        if let Some(e) = &self.exactness {
            let _ = writeln!(
                s,
                "\nGN with τ = L = {} at T = 1: top-1 agreement {:.4}, relative MSE {:.1e}",
                e.tau, e.top1_agreement, e.relative_mse
            );
        }
        s
    }

    /// Per weighted op (what it reads, its MACs, GN's operations at the largest T) and per
    /// spiking layer (neurons, firing rate and events per step, IF and GN).
    fn layer_tables(&self, s: &mut String) {
        let Some(ops) = &self.operations else { return };
        let Some(gn) = ops.costs.iter().filter(|c| c.neuron == NeuronKind::Gn).max_by_key(|c| c.timesteps) else {
            return;
        };
        let _ = writeln!(s, "\nweighted ops (GN τ={}, T={})", self.tau, gn.timesteps);
        let _ = writeln!(s, "| node | op | reads | ANN MACs | ACs | MACs |\n| --- | --- | --- | --- | --- | --- |");
        for (w, &ops) in ops.layers.iter().zip(&gn.per_op) {
            let (reads, acs, macs) = match &w.reads {
                Reads::Once => ("analog, once".to_string(), 0.0, ops),
                Reads::Steps => ("analog, every step".to_string(), 0.0, ops),
                Reads::Spikes(sources) => (format!("spikes of {}", sources.join(", ")), ops, 0.0),
                Reads::PooledSpikes { sources, pool, .. } => {
                    (format!("spikes of {} through {pool} (window {})", sources.join(", "), w.window), ops, 0.0)
                }
            };
            let _ =
                writeln!(s, "| {} | {} | {reads} | {} | {} | {} |", w.node, w.op, si(w.macs as f64), si(acs), si(macs));
        }
        let _ = writeln!(s, "\nspiking layers: spikes and events per neuron per step over the first T steps");
        let _ = writeln!(
            s,
            "| layer | neurons | T | IF spikes | GN spikes | GN events |\n| --- | --- | --- | --- | --- | --- |"
        );
        for l in &self.layers {
            for (k, r) in l.gn_rates.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.4} | {:.4} | {:.4} |",
                    l.site, l.neurons, r.0, l.if_rates[k].1, r.1, l.gn_events[k].1
                );
            }
        }
    }
}

/// The cost table: one row per network and T (ACs, MACs, dense SOPs, spikes, events,
/// activation sparsity, membrane updates, energy, and energy against the ANN's).
pub fn cost_table(ops: &Operations) -> String {
    let mut s = String::from(
        "| | T | ACs | MACs | dense SOPs | spikes | events | activation sparsity | membrane updates | energy | × ANN |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for c in &ops.costs {
        let _ = writeln!(s, "{}", cost_row(c, ops.ann_energy_pj));
    }
    s
}

/// One network at one T, a row of the cost table.
fn cost_row(c: &Cost, ann_energy_pj: f64) -> String {
    let label = c.neuron.label(c.tau);
    format!(
        "| {label} | {} | {} | {} | {} | {} | {} | {:.4} | {} | {} | {:.2} |",
        c.timesteps,
        si(c.effective_acs),
        si(c.effective_macs),
        si(c.dense),
        si(c.spikes),
        si(c.events),
        c.activation_sparsity,
        si(c.membrane_updates),
        energy(c.energy_pj),
        c.energy_pj / ann_energy_pj.max(f64::MIN_POSITIVE)
    )
}
