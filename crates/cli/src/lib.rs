//! The `gn-transpile` command: a thin shell over the library. The binary calls [`main`];
//! the Python package's `gn-transpile` script calls it too.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gn_transpile::{transpile, Emit, NeuronKind, Options};

mod nir;

const EXAMPLES: &str = "\
Examples:
  gn-transpile fixtures/models/resnet20_l8.onnx snn.onnx --tau 4 --timesteps 4
  gn-transpile ann.onnx snn_if.onnx --neuron if --timesteps 32 --anytime
  gn-transpile ann.onnx snn_compact.onnx --emit custom-op
  gn-transpile ann.onnx snn_step.onnx --emit stateful      (one step per call; T chosen at run time)
  gn-transpile relu_ann.onnx snn.onnx --calibrate train_sample.npy --percentile 99.9
  gn-transpile inspect ann.onnx
  gn-transpile export-nir ann.onnx snn.nir --tau 4      (NIR for sinabs, snnTorch, Norse; needs Python with nir)
  gn-transpile verify ann.onnx --data x.npy --labels y.npy --tau 4";

/// Converts a QCFS ANN (ONNX) into a spiking network of Group Neurons (ONNX).
///
/// Every QCFS activation becomes a spiking layer; the T time steps are unrolled into
/// standard ONNX ops, time folded into the batch. The output model has the ANN's inputs
/// and outputs, each output holding the readout averaged over the T steps, and runs on
/// any ONNX runtime.
#[derive(Parser, Debug)]
#[command(name = "gn-transpile", version, after_help = EXAMPLES, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The QCFS ANN to convert (.onnx).
    #[arg(value_name = "IN", required = true)]
    input: Option<PathBuf>,
    /// Where to write the spiking network (.onnx); never the input file.
    #[arg(value_name = "OUT", required = true)]
    output: Option<PathBuf>,
    #[command(flatten)]
    convert: ConvertArgs,
}

#[derive(clap::Args, Debug)]
struct ConvertArgs {
    /// Members per Group Neuron (τ); member i fires at i·θ/τ.
    #[arg(long, default_value_t = 4, value_name = "N")]
    tau: u32,
    /// Time steps to unroll (T) [default: 4; not with --emit stateful, where the caller
    /// runs as many steps as it wants].
    #[arg(long, short = 't', value_name = "T")]
    timesteps: Option<usize>,
    /// Neuron model: gn (Group Neurons) or if (integrate-and-fire, the baseline).
    #[arg(long, value_enum, default_value_t = NeuronKind::Gn)]
    neuron: NeuronKind,
    /// Also output `{y}_anytime` [T, …]: the readout averaged over steps 1..t, for every t.
    #[arg(long)]
    anytime: bool,
    /// Convert ops that are neither exact in time nor exact in rate (Softmax, Sigmoid, a product of two time-varying tensors, …) anyway, with a warning per node; leave near-QCFS chains unconverted.
    #[arg(long)]
    allow_inexact: bool,
    /// Model form: standard (every step unrolled into standard ops), custom-op (one
    /// gn.transpile GroupNeuron/IFNeuron node per spiking layer, defined by a model-local
    /// function that ONNX Runtime inlines, or runs as one fused kernel with the gn-ort-ops
    /// library registered) or stateful (one step per call: membranes and readout as extra
    /// inputs and outputs, listed in metadata gn_transpile.state).
    #[arg(long, value_enum, default_value_t = Emit::Standard, value_name = "FORM")]
    emit: Emit,
    #[command(flatten)]
    calibration: CalibrationArgs,
    /// Wait until OUT is on disk (fsync of the file and its folder) before exiting. OUT
    /// is always written to a temporary file and renamed, so nothing ever sees it half
    /// written; without --fsync a power loss right after the run can still lose it, as
    /// with cp.
    #[arg(long)]
    fsync: bool,
    /// Print each site's op chain and the near misses.
    #[arg(long, short = 'v')]
    verbose: bool,
}

#[derive(clap::Args, Debug)]
struct CalibrationArgs {
    /// Convert a ReLU network (Relu, ReLU6 / Clip(0, c)): run it on these sample inputs (a
    /// float32 .npy, batch on axis 0, e.g. a few hundred training images) and set each
    /// activation's θ from its values. Memory does not grow with the number of inputs.
    #[arg(long, value_name = "X.npy")]
    calibrate: Option<PathBuf>,
    /// With --calibrate: θ is this percentile of each activation's values, zeros included
    /// (100 = the maximum); a Clip(0, c) keeps θ ≤ c.
    #[arg(long, value_name = "P", default_value_t = gn_transpile::calibrate::DEFAULT_PERCENTILE, requires = "calibrate")]
    percentile: f64,
    /// With --calibrate: one θ per output channel (axis 1) instead of one per layer.
    #[arg(long, requires = "calibrate")]
    per_channel: bool,
}

impl CalibrationArgs {
    /// Runs the calibration, if asked for, with a progress line.
    fn run(
        &self,
        model: &gn_onnx::proto::ModelProto,
    ) -> anyhow::Result<Option<std::sync::Arc<gn_transpile::calibrate::Calibration>>> {
        let Some(data) = &self.calibrate else { return Ok(None) };
        #[cfg(feature = "tract")]
        {
            let spec = gn_transpile::tract_calibrate::CalibrationSpec {
                percentile: self.percentile,
                per_channel: self.per_channel,
                ..Default::default()
            };
            let line = ProgressLine::default();
            let progress = |done: usize, total: usize| {
                line.show(done == total, || format!("calibrating: {done}/{total} inputs"));
            };
            let calibration = gn_transpile::tract_calibrate::calibrate_file(model, data, &spec, &progress)
                .with_context(|| format!("cannot calibrate on {}", data.display()))?;
            end_progress_line();
            Ok(Some(std::sync::Arc::new(calibration)))
        }
        #[cfg(not(feature = "tract"))]
        {
            let _ = (model, data);
            anyhow::bail!("--calibrate runs the network through tract, which this build leaves out (feature `tract`); from Python, gn_transpile.convert(..., calibrate=inputs) runs it on ONNX Runtime")
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the spiking network as a NIR graph for neuromorphic simulators and hardware (runs Python with the nir package; docs/nir.md).
    ExportNir(nir::ExportNir),
    /// Audit a model without writing anything: QCFS sites, θ, L, and ops that are not exact in time.
    Inspect {
        /// The model to audit (.onnx).
        #[arg(value_name = "IN")]
        input: PathBuf,
    },
    /// Run the ANN and its IF and GN conversions on your data; print the MSE and accuracy per T, and the cost.
    #[cfg(feature = "verify")]
    Verify(VerifyArgs),
}
#[cfg(feature = "verify")]
fn parse_energy(s: &str) -> Result<gn_verify::EnergyTable, String> {
    s.parse()
}

/// What `gn-transpile verify` is asked for.
#[cfg(feature = "verify")]
#[derive(clap::Args, Debug)]
struct VerifyArgs {
    /// The QCFS ANN, or with --calibrate a ReLU network (.onnx).
    #[arg(value_name = "IN")]
    input: PathBuf,
    /// Inputs: a float32 .npy with the batch on axis 0.
    #[arg(long)]
    data: PathBuf,
    /// Labels: an integer .npy, one per input (for accuracy).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Members per Group Neuron (τ).
    #[arg(long, default_value_t = 4)]
    tau: u32,
    /// The T values to report (comma-separated); the largest is simulated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    timesteps: Vec<usize>,
    /// Energy per operation for the cost report: 45nm-fp32 (4.6 pJ per MAC, 0.9 pJ per AC), 45nm-fp16, 45nm-int8, or mac=PJ,ac=PJ.
    #[arg(long, default_value = "45nm-fp32", value_parser = parse_energy)]
    energy: gn_verify::EnergyTable,
    /// Also print each weighted op's and each spiking layer's figures.
    #[arg(long)]
    per_layer: bool,
    /// Also measure GN at these τ (default 1,2,4,8; τ = 1 is IF) at each T up to 8, and print accuracy and MSE against energy, marking the points no other point beats.
    #[arg(long, value_name = "TAUS", value_delimiter = ',', num_args = 0..=1, default_missing_value = "1,2,4,8")]
    pareto: Option<Vec<u32>>,
    /// With --pareto: also draw accuracy (MSE without labels) against energy as an SVG chart here.
    #[arg(long, value_name = "FILE.svg", requires = "pareto")]
    plot: Option<PathBuf>,
    /// Print the measurement as JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    calibration: CalibrationArgs,
}

#[cfg(feature = "verify")]
fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    use gn_verify::{measure, read_npy_inputs, read_npy_labels, Spec};
    let VerifyArgs { input, data, labels, tau, timesteps, energy, per_layer, pareto, plot, json, calibration } = args;
    if timesteps.is_empty() || timesteps.iter().any(|&t| t == 0 || t > gn_transpile::MAX_TIMESTEPS) {
        anyhow::bail!("--timesteps must list values between 1 and {}", gn_transpile::MAX_TIMESTEPS);
    }
    Options { tau, ..Default::default() }.validate()?;
    let pareto_taus = pareto.unwrap_or_default();
    if let Some(k) = pareto_taus.iter().find(|&&k| k == 0 || k > gn_transpile::MAX_TAU) {
        anyhow::bail!("--pareto: τ = {k} is out of range (1 to {})", gn_transpile::MAX_TAU);
    }
    // The chart's file is checked before the work: it may not overwrite an input.
    let protected: Vec<PathBuf> = [Some(&input), Some(&data), labels.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    if let Some(path) = &plot {
        gn_onnx::save::check_output(path, &protected)?;
    }
    let model = gn_onnx::io::load(&input)?.model;
    let calibration = calibration.run(&model)?;
    let x = read_npy_inputs(&data)?;
    let n = x.shape().first().copied().unwrap_or(0);
    let labels = labels.as_deref().map(read_npy_labels).transpose()?;
    if let Some(l) = &labels {
        anyhow::ensure!(l.len() == n, "{} labels for {n} inputs", l.len());
    }
    let spec = Spec { calibration, energy, pareto_taus, ..Spec::for_inputs(n, tau, &timesteps) };
    let line = ProgressLine::default();
    let progress = |stage: &str, done: usize, total: usize| {
        line.show(done == total, || format!("{stage:<16} {done}/{total} inputs   "));
    };
    let m = measure(&model, &x, labels.as_deref(), &spec, &progress)
        .with_context(|| format!("cannot verify {}", input.display()))?;
    end_progress_line();
    if json {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        print!("{}", m.to_markdown(per_layer));
    }
    if let Some(path) = plot {
        let (Some(p), Some(ops)) = (&m.pareto, &m.operations) else {
            anyhow::bail!("no chart for {}: the model has no weighted op to count", input.display());
        };
        let title = format!("{}: accuracy for energy", input.file_stem().unwrap_or_default().to_string_lossy());
        gn_onnx::save::save_bytes(p.to_svg(&title, m.ann_accuracy, ops.ann_energy_pj).as_bytes(), &path, &protected)?;
        eprintln!("accuracy for energy drawn in {}", path.display());
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::ExportNir(export)) => return export.run(),
        Some(Command::Inspect { input }) => {
            let loaded = gn_onnx::io::load(&input)?;
            print!("{}", gn_transpile::inspect::inspect(&loaded.model)?);
            return Ok(());
        }
        #[cfg(feature = "verify")]
        Some(Command::Verify(args)) => return verify(args),
        None => {}
    }
    let (Some(input), Some(output)) = (cli.input, cli.output) else {
        anyhow::bail!("IN and OUT are required (see --help)");
    };
    let args = cli.convert;
    let options = Options {
        neuron: args.neuron,
        tau: args.tau,
        timesteps: match (args.emit, args.timesteps) {
            (Emit::Stateful, Some(_)) => anyhow::bail!(
                "--timesteps does not apply to --emit stateful: the model runs one step per call, as many calls as the caller makes"
            ),
            (_, t) => t.unwrap_or(4),
        },
        anytime: args.anytime,
        allow_inexact: args.allow_inexact,
        emit: args.emit,
        calibration: None,
        compensation: gn_transpile::Compensation::Regions,
    };
    options.validate()?;
    let start = Instant::now();
    // OUT is checked before the work and again before the rename.
    let input_file = input.canonicalize().map_err(|cause| gn_onnx::IoError::Read { path: input.clone(), cause })?;
    gn_onnx::save::check_output(&output, &[input_file])?;
    let loaded = gn_onnx::io::load(&input)?;
    gn_onnx::save::check_output(&output, &loaded.sources)?;
    let options = Options { calibration: args.calibration.run(&loaded.model)?, ..options };
    let (model, report) =
        transpile(&loaded.model, &options).with_context(|| format!("cannot convert {}", input.display()))?;
    let durability = if args.fsync { gn_onnx::save::Durability::Fsync } else { gn_onnx::save::Durability::Atomic };
    gn_onnx::save::save_loaded(&model, &output, &loaded, durability)?;
    for site in &report.detection.sites {
        match &site.per_channel {
            Some(pc) => {
                let (lo, hi) = pc.theta.iter().fold((f64::INFINITY, 0.0f64), |(a, b), &t| (a.min(t), b.max(t)));
                eprintln!(
                    "site {}: θ per channel ({} channels, {lo:.6} to {hi:.6}), {}",
                    site.name,
                    pc.theta.len(),
                    site.ops
                )
            }
            None if site.levels == 0 => {
                eprintln!("site {}: θ = {:.6} (calibrated), {}", site.name, site.theta, site.ops)
            }
            None => eprintln!("site {}: θ = {:.6}, L = {}", site.name, site.theta, site.levels),
        }
        if args.verbose {
            eprintln!("    {} ({} → {})", site.ops, site.input, site.output);
        }
    }
    if args.verbose {
        for m in &report.moves {
            eprintln!("{m}");
        }
        for m in &report.detection.near_misses {
            eprintln!("near miss at '{}' ({}): {}", m.node, m.ops, m.reason);
        }
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    let neuron = match options.neuron {
        NeuronKind::Gn => format!("GN (τ = {})", options.tau),
        NeuronKind::If => "IF".to_string(),
    };
    let steps = match options.emit {
        Emit::Stateful => "one step per call".to_string(),
        _ => format!("T = {}", options.timesteps),
    };
    eprintln!(
        "{} spiking layers of {neuron}, {steps}: {} nodes → {} nodes, written to {} in {:.2} s",
        report.spiking_layers.len(),
        report.nodes_before,
        report.nodes_after,
        output.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Whether a progress line without a newline is on stderr.
static PROGRESS_LINE: AtomicBool = AtomicBool::new(false);

/// A progress line on stderr redrawn at most five times a second, and on its last update:
/// a run over a million inputs writes a few hundred updates, not one per batch.
#[cfg(feature = "tract")]
#[derive(Default)]
struct ProgressLine {
    drawn: std::sync::Mutex<Option<std::time::Instant>>,
}

#[cfg(feature = "tract")]
impl ProgressLine {
    fn show(&self, last: bool, text: impl FnOnce() -> String) {
        let mut drawn = self.drawn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let due = drawn.is_none_or(|at| at.elapsed() >= std::time::Duration::from_millis(200));
        if due || last {
            PROGRESS_LINE.store(true, Ordering::Relaxed);
            eprint!("\r{}", text());
            *drawn = Some(std::time::Instant::now());
        }
    }
}

/// Ends a progress line, so what follows starts on a line of its own.
fn end_progress_line() {
    if PROGRESS_LINE.swap(false, Ordering::Relaxed) {
        eprintln!();
    }
}

/// On SIGINT or SIGTERM, removes the temporary of a write in progress and exits with
/// 128 + the signal's number, as a shell expects.
fn remove_temporaries_on_signal() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else { return };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            end_progress_line();
            eprintln!("error: interrupted");
            gn_onnx::save::exit_removing_temporaries(128 + signal);
        }
    });
}

/// Runs the command on `args` (the program name first); returns its exit code.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    ExitCode::from(run_command(args))
}

/// Runs the command on `args` (the program name first); returns its exit status: 0 on
/// success, 1 on an error (printed on stderr as one line), 2 on a usage error.
pub fn run_command<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code().clamp(0, 255) as u8;
        }
    };
    remove_temporaries_on_signal();
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            end_progress_line();
            eprintln!("error: {e:#}");
            1
        }
    }
}
