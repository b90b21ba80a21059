//! `gn-transpile export-nir`: the spiking network as a NIR graph (HDF5), for neuromorphic
//! simulators and hardware. Every NIR consumer is Python, and NIR files are written by
//! the `nir` package; so the command runs `gn_transpile.to_nir` and `nir.write` in a
//! Python that has both (docs/nir.md), on a temporary file renamed over OUT once whole.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// The program run in Python: argv is IN, the temporary, then `key=value` options.
const PROGRAM: &str = r#"
import sys
try:
    import gn_transpile, nir
except ImportError as e:
    sys.stderr.write(f"needs the Python packages gn_transpile and nir ({e})\n")
    sys.exit(3)
source, target, *pairs = sys.argv[1:]
options = dict(p.split("=", 1) for p in pairs)
for key in ("tau", "batch"):
    options[key] = int(options[key])
options["percentile"] = float(options["percentile"])
options["per_channel"] = options["per_channel"] == "1"
options["calibrate"] = options["calibrate"] or None
try:
    graph = gn_transpile.to_nir(source, **options)
except ValueError as e:
    sys.stderr.write(f"{e}\n")
    sys.exit(2)
nir.write(target, graph)
"#;

/// What `export-nir` was asked for.
#[derive(clap::Args, Debug)]
pub struct ExportNir {
    /// The QCFS ANN (or, with --calibrate, the ReLU network) to convert (.onnx).
    #[arg(value_name = "IN")]
    input: PathBuf,
    /// Where to write the NIR graph (.nir, HDF5); never the input file.
    #[arg(value_name = "OUT")]
    output: PathBuf,
    /// Members per Group Neuron (τ): at most τ spikes per step.
    #[arg(long, default_value_t = 4, value_name = "N")]
    tau: u32,
    /// Neuron model: gn (Group Neurons) or if (integrate-and-fire).
    #[arg(long, value_enum, default_value_t = gn_transpile::NeuronKind::Gn)]
    neuron: gn_transpile::NeuronKind,
    /// How each spiking layer is written: if (a NIR IF of threshold θ_GN; v(0) and the cap
    /// τ in metadata, see docs/nir.md) or exact (refused: no consumer reads it).
    #[arg(long, default_value = "if", value_parser = ["if", "exact"])]
    form: String,
    /// How average pools are written: conv (a C→C Conv2d, which every consumer reads) or
    /// avgpool (NIR AvgPool2d, which only snnTorch imports).
    #[arg(long, default_value = "conv", value_parser = ["conv", "avgpool"])]
    pool: String,
    // --calibrate and its options, as for a conversion; the calibration runs on ONNX
    // Runtime in the Python that exports.
    #[command(flatten)]
    calibration: crate::CalibrationArgs,
    /// The Python to run (with the packages gn_transpile and nir) [default: $GN_TRANSPILE_PYTHON, else python3].
    #[arg(long, value_name = "PY")]
    python: Option<PathBuf>,
}

impl ExportNir {
    /// Exports IN to OUT; OUT appears only once complete.
    pub fn run(self) -> anyhow::Result<()> {
        let python = self
            .python
            .clone()
            .or_else(|| std::env::var_os("GN_TRANSPILE_PYTHON").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("python3"));
        let input =
            self.input.canonicalize().map_err(|cause| gn_onnx::IoError::Read { path: self.input.clone(), cause })?;
        let mut protected = vec![input.clone()];
        protected.extend(self.calibration.calibrate.iter().filter_map(|p| p.canonicalize().ok()));
        gn_onnx::save::check_output(&self.output, &protected)?;
        let mut failure = None;
        let saved = gn_onnx::save::save_by_path(&self.output, &protected, &mut |temporary| match self
            .export(&python, &input, temporary)
        {
            Ok(()) => Ok(()),
            Err(e) => {
                failure = Some(e);
                Err(std::io::Error::other("the export failed"))
            }
        });
        match (saved, failure) {
            (_, Some(e)) => Err(e),
            (Err(e), None) => Err(e.into()),
            (Ok(()), None) => Ok(()),
        }
    }

    /// Runs the export in `python`, writing `target`.
    fn export(&self, python: &Path, input: &Path, target: &Path) -> anyhow::Result<()> {
        let calibration = &self.calibration;
        let calibrate = calibration.calibrate.as_deref().map(Path::as_os_str).unwrap_or_default().to_string_lossy();
        let mut command = Command::new(python);
        command.arg("-c").arg(PROGRAM).arg(input).arg(target).args([
            format!("tau={}", self.tau),
            format!("neuron={}", self.neuron.key()),
            format!("form={}", self.form),
            format!("pool={}", self.pool),
            format!("calibrate={calibrate}"),
            format!("percentile={}", calibration.percentile),
            format!("per_channel={}", u8::from(calibration.per_channel)),
            "batch=64".to_string(),
        ]);
        let done = command.output().with_context(|| {
            format!("export-nir runs Python ({}), which cannot be started; give one with --python", python.display())
        })?;
        let said = String::from_utf8_lossy(&done.stderr);
        let last = said.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message").trim();
        match done.status.code() {
            Some(0) => Ok(()),
            Some(2) => anyhow::bail!("cannot export {} to NIR: {last}", self.input.display()),
            Some(3) => anyhow::bail!(
                "export-nir runs Python ({}), which {last}: pip install nir ./crates/gn-transpile-py, or give another Python with --python",
                python.display()
            ),
            _ => anyhow::bail!("the NIR export in Python ({}) failed: {last}", python.display()),
        }
    }
}
