//! Log setup: one JSON object per line (or human-readable with
//! `LOG_FORMAT=pretty`), on stdout for `serve` and on stderr for the other
//! commands, whose stdout is their output (`bench --json | jq` must parse).
//! `RUST_LOG` overrides the level.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing.
pub fn init(format: LogFormat, default_level: &str, on_stdout: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let writer = tracing_subscriber::fmt::writer::BoxMakeWriter::new(move || {
        if on_stdout {
            Box::new(std::io::stdout()) as Box<dyn std::io::Write>
        } else {
            Box::new(std::io::stderr())
        }
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
