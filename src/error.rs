//! Error types, one per boundary, with messages that say what failed, on which input and
//! what to do about it.

use std::path::PathBuf;

/// Errors of the media source (GStreamer) stage.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The input path does not exist.
    #[error(
        "input {path}: no such file; check the path or pass a URI such as file:///abs/path.mp4"
    )]
    NotFound { path: PathBuf },
    /// The input exists but cannot be opened for reading.
    #[error("input {path}: cannot be read ({reason}); check its permissions")]
    Unreadable { path: PathBuf, reason: String },
    /// The input file has no bytes.
    #[error("input {path}: the file is empty (0 bytes); pass a media file with an audio track")]
    Empty { path: PathBuf },
    /// GStreamer could not build or start the pipeline.
    #[error(
        "input {input}: cannot start the media pipeline: {reason}; is GStreamer installed (run scripts/setup)?"
    )]
    Pipeline { input: String, reason: String },
    /// The media could not be decoded.
    #[error(
        "input {input}: cannot decode media: {reason}; is it a real audio/video file in a format GStreamer reads?"
    )]
    Decode { input: String, reason: String },
    /// A network source could not be reached or refused the request.
    #[error(
        "input {input}: cannot read the source: {reason}; {}",
        if *.permanent { "check the address (host, port, path) and the credentials" } else { "is the server running and reachable?" }
    )]
    Unreachable {
        input: String,
        reason: String,
        /// Retrying cannot help (not found, not authorised, unknown host).
        permanent: bool,
    },
    /// No data arrived for a while.
    #[error("input {input}: no data for {secs} s; the source stalled (is it still sending?)")]
    Stalled { input: String, secs: u64 },
    /// The media has no audio stream.
    #[error(
        "input {input}: no audio track; sentistream needs speech audio to cut utterance windows"
    )]
    NoAudio { input: String },
    /// `--channels` names a different number of speakers than the input has channels.
    #[error(
        "input {input}: {found} audio channel(s), but --channels names {named} speaker(s); name one speaker per channel (e.g. --channels agent,customer for a stereo call), or drop --channels for a mono recording"
    )]
    Channels {
        input: String,
        found: u32,
        named: u32,
    },
    /// The consumer of the source stopped before the end.
    #[error("input {input}: processing stopped early: {reason}")]
    Aborted { input: String, reason: String },
}

impl SourceError {
    /// Whether retrying cannot help (a wrong address or refused credentials).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Unreachable {
                permanent: true,
                ..
            }
        )
    }
}

/// Errors of model files: loading, checking, converting and installing them.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model file is missing.
    #[error(
        "model file {path} is missing; run `sentistream models install` (or scripts/setup), or point --{flag} at your own file"
    )]
    Missing { path: PathBuf, flag: &'static str },
    /// A model file is present but is not what it should be.
    #[error(
        "model file {path} is corrupt or of the wrong kind: {reason}; reinstall it with `sentistream models install --force`"
    )]
    Corrupt { path: PathBuf, reason: String },
    /// A model failed at run time.
    #[error("model {name}: {reason}")]
    Runtime { name: String, reason: String },
    /// Fetching or unpacking a registry package failed.
    #[error("asset {asset}: {reason}")]
    Install { asset: String, reason: String },
    /// An I/O error on a model file.
    #[error("model file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Errors in the configuration, all reported at once.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("config {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    /// One or more keys have invalid values.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// Errors of output sinks.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// An output named on the command line cannot be used.
    #[error("output {spec:?}: {reason}")]
    Spec { spec: String, reason: String },
    /// Writing an event failed.
    #[error("output {target}: {source}")]
    Io {
        target: String,
        #[source]
        source: std::io::Error,
    },
}

/// Top-level error of a sentistream job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// See [`SourceError`].
    #[error(transparent)]
    Source(#[from] SourceError),
    /// See [`ModelError`].
    #[error(transparent)]
    Model(#[from] ModelError),
    /// See [`ConfigError`].
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// See [`SinkError`].
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// See [`DatasetError`].
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// A stream's thread panicked (a bug): the stream's output stopped there.
    #[error(
        "stream {stream}: its thread crashed ({reason}); the events before the crash were written; please report this with the log"
    )]
    StreamPanicked { stream: String, reason: String },
    /// The command line asks for something that cannot be done.
    #[error("{0}")]
    Usage(String),
}

/// Result with the top-level [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors in a dataset folder (MMSA raw layout).
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// No label.csv.
    #[error(
        "dataset {root}: no label.csv; a dataset in the MMSA raw layout has label.csv and Raw/<video_id>/<clip_id>.mp4"
    )]
    MissingLabels { root: PathBuf },
    /// A row cannot be read.
    #[error("{path}, row {row}: {reason}")]
    Malformed {
        path: PathBuf,
        row: usize,
        reason: String,
    },
    /// A label is outside the dataset's range.
    #[error(
        "{path}, row {row}: label {value} is outside [{lo}, {hi}]; is --scale right (mosi: [-3, 3], sims: [-1, 1])?"
    )]
    LabelRange {
        path: PathBuf,
        row: usize,
        value: f32,
        lo: f32,
        hi: f32,
    },
    /// The mode column holds something else than train/valid/test.
    #[error("{path}, row {row}: unknown mode {mode:?}; expected train, valid or test")]
    UnknownMode {
        path: PathBuf,
        row: usize,
        mode: String,
    },
    /// Nothing usable.
    #[error("dataset {root}: {reason}")]
    Empty { root: PathBuf, reason: String },
}
