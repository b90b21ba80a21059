//! The `gn-transpile` command: a thin shell over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use gn_transpile::{transpile, NeuronKind, Options};

const EXAMPLES: &str = "\
Examples:
  gn-transpile fixtures/models/resnet20_l8.onnx snn.onnx --tau 4 --timesteps 4
  gn-transpile ann.onnx snn_if.onnx --neuron if --timesteps 32 --anytime
  gn-transpile inspect ann.onnx";

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
    /// Time steps to unroll (T).
    #[arg(long, short = 't', default_value_t = 4, value_name = "T")]
    timesteps: usize,
    /// Neuron model: gn (Group Neurons) or if (integrate-and-fire, the baseline).
    #[arg(long, value_enum, default_value_t = Neuron::Gn)]
    neuron: Neuron,
    /// Also output `{y}_anytime` [T, …]: the readout averaged over steps 1..t, for every t.
    #[arg(long)]
    anytime: bool,
    /// Convert ops that are not exact in time (MaxPool on spikes, Softmax, …) anyway, with a warning per node.
    #[arg(long)]
    allow_inexact: bool,
    /// Print each site's op chain and the near misses.
    #[arg(long, short = 'v')]
    verbose: bool,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum Neuron {
    Gn,
    If,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Audit a model without writing anything: QCFS sites, θ, L, and ops that are not exact in time.
    Inspect {
        /// The model to audit (.onnx).
        #[arg(value_name = "IN")]
        input: PathBuf,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Inspect { input }) = cli.command {
        let loaded = gn_onnx::io::load(&input)?;
        print!("{}", gn_transpile::inspect::inspect(&loaded.model)?);
        return Ok(());
    }
    let (Some(input), Some(output)) = (cli.input, cli.output) else {
        anyhow::bail!("IN and OUT are required (see --help)");
    };
    let args = cli.convert;
    let options = Options {
        neuron: match args.neuron {
            Neuron::Gn => NeuronKind::Gn,
            Neuron::If => NeuronKind::If,
        },
        tau: args.tau,
        timesteps: args.timesteps,
        anytime: args.anytime,
        allow_inexact: args.allow_inexact,
    };
    options.validate()?;
    let start = Instant::now();
    let loaded = gn_onnx::io::load(&input)?;
    let (model, report) =
        transpile(&loaded.model, &options).with_context(|| format!("cannot convert {}", input.display()))?;
    gn_onnx::io::save(&model, &output, Some(&input))?;
    for site in &report.detection.sites {
        eprintln!("site {}: θ = {:.6}, L = {}", site.name, site.theta, site.levels);
        if args.verbose {
            eprintln!("    {} ({} → {})", site.ops, site.input, site.output);
        }
    }
    if args.verbose {
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
    eprintln!(
        "{} spiking layers of {neuron}, T = {}: {} nodes → {} nodes, written to {} in {:.2} s",
        report.spiking_layers.len(),
        options.timesteps,
        report.nodes_before,
        report.nodes_after,
        output.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
