//! The media source: a GStreamer pipeline that decodes a file or URI and delivers 16 kHz
//! mono f32 audio and scaled RGB frames, each stamped with stream time from buffer PTS.
//!
//! `uridecodebin` exposes one pad per decoded stream; each is linked to the branch
//! described in `pipelines/audio.gst` or `pipelines/video.gst`. Appsink callbacks and the
//! bus sync handler push into one bounded channel, so a slow consumer pauses decoding
//! (nothing is lost) and errors arrive in order with the data.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::config::SourceConfig;
use crate::error::SourceError;

/// Sample rate of delivered audio.
pub const SAMPLE_RATE: u32 = 16_000;
const AUDIO_BRANCH: &str = include_str!("../../pipelines/audio.gst");
const VIDEO_BRANCH: &str = include_str!("../../pipelines/video.gst");
const WEBCAM: &str = include_str!("../../pipelines/webcam.gst");
/// With no data or bus message for this long, a file source is declared stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Audio buffers waiting for reuse; bounded so a burst cannot pin memory.
const POOL_CAPACITY: usize = 64;

/// A decoded RGB video frame (tightly packed rows).
#[derive(Debug)]
pub struct VideoFrame {
    /// Presentation time in seconds of stream time.
    pub pts: f64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes, RGB.
    pub data: Vec<u8>,
}

/// What the source delivers.
#[derive(Debug)]
pub enum SourceMsg {
    /// Mono 16 kHz samples; `pts` is the stream time of the first sample, when known.
    Audio {
        /// Stream time of the first sample in seconds.
        pts: Option<f64>,
        /// The samples (return the Vec with [`Source::recycle_audio`]).
        samples: Vec<f32>,
    },
    /// One video frame.
    Video(VideoFrame),
    /// The video stream ended (no more frames will come).
    VideoEnd,
    /// All streams of the input are known.
    StreamsKnown {
        /// An audio stream is linked.
        has_audio: bool,
        /// A video stream is linked.
        has_video: bool,
    },
    /// End of the input.
    Eos,
    /// The pipeline failed.
    Error(SourceError),
}

/// Buffers dropped by a live source because the analysis fell behind.
#[derive(Debug, Default)]
pub(crate) struct Drops {
    /// Audio buffers.
    pub audio: AtomicU64,
    /// Video frames.
    pub video: AtomicU64,
}

/// Shared delivery state of the appsink callbacks.
#[derive(Clone)]
struct Delivery {
    tx: Sender<SourceMsg>,
    /// Live: never block GStreamer's streaming threads; drop and count instead.
    leaky: Arc<AtomicBool>,
    drops: Arc<Drops>,
}

impl Delivery {
    /// Sends data; `Err` only when the receiver is gone.
    fn data(&self, m: SourceMsg, video: bool) -> Result<(), gst::FlowError> {
        if self.leaky.load(Ordering::Relaxed) {
            match self.tx.try_send(m) {
                Ok(()) => Ok(()),
                Err(crossbeam_channel::TrySendError::Full(_)) => {
                    let c = if video {
                        &self.drops.video
                    } else {
                        &self.drops.audio
                    };
                    c.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                    Err(gst::FlowError::Flushing)
                }
            }
        } else {
            self.tx.send(m).map_err(|_| gst::FlowError::Flushing)
        }
    }
}

/// What to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A file path or any URI GStreamer opens (file://, http://, rtsp://, ...).
    Uri(String),
    /// One channel of a multichannel recording (one speaker per channel, `--channels`).
    Channel {
        /// Path or URI.
        uri: String,
        /// Channel index, from 0.
        index: u32,
        /// Channels the recording must have.
        count: u32,
        /// Who speaks on it.
        speaker: String,
    },
    /// A complete launch description with appsinks named `audio` (required) and `video`.
    Launch {
        /// Where it came from (for messages).
        name: String,
        /// The description, placeholders filled.
        description: String,
    },
}

impl Input {
    /// Parses a source argument: `/dev/videoN` (V4L2 webcam via pipelines/webcam.gst),
    /// `FILE.gst[?key=value&...]` (a launch description; `{key}` placeholders are filled,
    /// plus `{fps}` and `{width}` from the config), otherwise a path or URI.
    pub fn parse(arg: &str, cfg: &SourceConfig) -> Result<Self, SourceError> {
        let fill = |desc: &str, params: &[(&str, &str)]| {
            let mut d = desc
                .replace("{fps}", &cfg.video_fps.to_string())
                .replace("{width}", &cfg.video_width.to_string());
            for (k, v) in params {
                d = d.replace(&format!("{{{k}}}"), v);
            }
            d
        };
        let strip = |text: &str| -> String {
            text.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n")
        };
        if arg.starts_with("/dev/video") {
            return Ok(Self::Launch {
                name: arg.into(),
                description: fill(&strip(WEBCAM), &[("device", arg)]),
            });
        }
        let (file, query) = arg.split_once('?').unwrap_or((arg, ""));
        if file.ends_with(".gst") && !arg.contains("://") {
            let text = std::fs::read_to_string(file).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => SourceError::NotFound { path: file.into() },
                _ => SourceError::Unreadable {
                    path: file.into(),
                    reason: e.to_string(),
                },
            })?;
            let body = strip(&text);
            let params: Vec<(&str, &str)> = query
                .split('&')
                .filter(|p| !p.is_empty())
                .filter_map(|p| p.split_once('='))
                .collect();
            let description = fill(&body, &params);
            if let Some(i) = description.find('{')
                && let Some(j) = description[i..].find('}')
            {
                return Err(pipeline_err(
                    arg,
                    format!(
                        "placeholder {} is not filled; pass it as {file}?{}=VALUE",
                        &description[i..i + j + 1],
                        &description[i + 1..i + j]
                    ),
                ));
            }
            return Ok(Self::Launch {
                name: arg.into(),
                description,
            });
        }
        Ok(Self::Uri(arg.into()))
    }

    /// Whether the input is known to be live before it is opened.
    pub fn known_live(&self) -> bool {
        match self {
            Self::Uri(u) => {
                let u = u.to_ascii_lowercase();
                u.starts_with("rtsp://")
                    || u.starts_with("rtsps://")
                    || u.starts_with("udp://")
                    || u.starts_with("srt://")
            }
            Self::Channel { .. } => false,
            Self::Launch { description, .. } => {
                description.contains("v4l2src")
                    || description.contains("is-live=true")
                    || description.contains("rtspsrc")
            }
        }
    }

    /// Name for messages.
    pub fn name(&self) -> &str {
        match self {
            Self::Uri(u) | Self::Channel { uri: u, .. } => u,
            Self::Launch { name, .. } => name,
        }
    }
}

/// What [`Source::next`] found.
#[derive(Debug)]
pub enum Next {
    /// A message from the pipeline.
    Msg(SourceMsg),
    /// Nothing arrived in time.
    Idle,
    /// Shutdown was signalled.
    Stop,
}

/// A running media source. Dropping it stops the pipeline.
pub struct Source {
    pipeline: gst::Pipeline,
    rx: Option<Receiver<SourceMsg>>,
    pool_tx: Sender<Vec<f32>>,
    frame_pool_tx: Sender<Vec<u8>>,
    input: String,
    live: bool,
    drops: Arc<Drops>,
}

/// Turns a path or URI into a URI, checking local files first so errors name the file.
pub(crate) fn input_to_uri(input: &str) -> Result<String, SourceError> {
    if input.contains("://") {
        return Ok(input.to_string());
    }
    let path = Path::new(input);
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SourceError::NotFound { path: path.into() },
        _ => SourceError::Unreadable {
            path: path.into(),
            reason: e.to_string(),
        },
    })?;
    if meta.is_dir() {
        return Err(SourceError::Unreadable {
            path: path.into(),
            reason: "it is a directory".into(),
        });
    }
    if let Err(e) = std::fs::File::open(path) {
        return Err(SourceError::Unreadable {
            path: path.into(),
            reason: e.to_string(),
        });
    }
    if meta.len() == 0 {
        return Err(SourceError::Empty { path: path.into() });
    }
    let abs: PathBuf = std::fs::canonicalize(path).map_err(|e| SourceError::Unreadable {
        path: path.into(),
        reason: e.to_string(),
    })?;
    gst::glib::filename_to_uri(&abs, None)
        .map(|u| u.to_string())
        .map_err(|e| SourceError::Unreadable {
            path: path.into(),
            reason: e.to_string(),
        })
}

fn pipeline_err(input: &str, reason: impl ToString) -> SourceError {
    SourceError::Pipeline {
        input: input.to_string(),
        reason: reason.to_string(),
    }
}

/// A pipeline error as the user should read it: a resource error (the source could not be
/// opened or read: refused, not found, not authorised, unknown host) is about reaching
/// the source, anything else about decoding the media.
fn classify(input: &str, err: &gst::glib::Error, reason: String) -> SourceError {
    let input = input.to_string();
    match err.kind::<gst::ResourceError>() {
        Some(kind) => SourceError::Unreachable {
            input,
            reason,
            permanent: matches!(
                kind,
                gst::ResourceError::NotFound | gst::ResourceError::NotAuthorized
            ),
        },
        None => SourceError::Decode { input, reason },
    }
}

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), SourceError> {
    gst::init().map_err(|e| pipeline_err("(init)", e))
}

impl Source {
    /// Builds and starts the pipeline for `input` (a path or URI), as a file: a slow
    /// consumer pauses decoding and nothing is dropped.
    pub fn open(input: &str, cfg: &SourceConfig) -> Result<Self, SourceError> {
        Self::open_input(&Input::Uri(input.into()), cfg)
    }

    /// Opens any [`Input`]. Live inputs (RTSP, webcams, live launch descriptions, or
    /// whatever GStreamer reports as live) never block their streaming threads: when the
    /// analysis falls behind, buffers are dropped and counted ([`Source::drops`]).
    pub(crate) fn open_input(input: &Input, cfg: &SourceConfig) -> Result<Self, SourceError> {
        init()?;
        let leaky = Arc::new(AtomicBool::new(input.known_live()));
        let drops = Arc::new(Drops::default());
        let (tx, rx) = crossbeam_channel::bounded(cfg.channel_capacity);
        let delivery = Delivery {
            tx: tx.clone(),
            leaky: leaky.clone(),
            drops: drops.clone(),
        };
        let (pool_tx, pool_rx) = crossbeam_channel::bounded::<Vec<f32>>(POOL_CAPACITY);
        let (frame_pool_tx, frame_pool_rx) = crossbeam_channel::bounded::<Vec<u8>>(POOL_CAPACITY);
        let input_name = input.name().to_string();
        let pipeline = match input {
            Input::Uri(u) => Self::build_uri(u, None, cfg, &delivery, &pool_rx, &frame_pool_rx)?,
            Input::Channel {
                uri, index, count, ..
            } => Self::build_uri(
                uri,
                Some((*index, *count)),
                cfg,
                &delivery,
                &pool_rx,
                &frame_pool_rx,
            )?,
            Input::Launch { name, description } => {
                Self::build_launch(name, description, &delivery, &pool_rx, &frame_pool_rx, &tx)?
            }
        };
        let bus = pipeline
            .bus()
            .ok_or_else(|| pipeline_err(&input_name, "pipeline has no bus"))?;
        Self::forward_bus(&bus, input_name.clone(), tx);
        let state = pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| SourceError::Decode {
                input: input_name.clone(),
                reason: "the pipeline refused to start".into(),
            })?;
        if state == gst::StateChangeSuccess::NoPreroll {
            leaky.store(true, Ordering::Relaxed);
        }
        Ok(Source {
            pipeline,
            rx: Some(rx),
            pool_tx,
            frame_pool_tx,
            input: input_name,
            live: leaky.load(Ordering::Relaxed),
            drops,
        })
    }

    /// Builds the pipeline of a launch description, attaches its `audio` (required) and
    /// `video` appsinks, and announces on `tx` which streams it has.
    fn build_launch(
        name: &str,
        description: &str,
        delivery: &Delivery,
        pool_rx: &Receiver<Vec<f32>>,
        frame_pool_rx: &Receiver<Vec<u8>>,
        tx: &Sender<SourceMsg>,
    ) -> Result<gst::Pipeline, SourceError> {
        let p = gst::parse::launch(description)
            .map_err(|e| pipeline_err(name, format!("bad launch description: {e}")))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| pipeline_err(name, "the launch description is not a pipeline"))?;
        let find = |n: &str| {
            p.by_name(n)
                .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        };
        let audio = find("audio").ok_or_else(|| {
            pipeline_err(
                name,
                "the launch description needs an appsink named \"audio\" (16 kHz mono F32LE)",
            )
        })?;
        let video = find("video");
        attach_audio(&Some(audio), delivery.clone(), pool_rx.clone());
        let has_video = video.is_some();
        attach_video(&video, delivery.clone(), frame_pool_rx.clone());
        let _ = tx.send(SourceMsg::StreamsKnown {
            has_audio: true,
            has_video,
        });
        Ok(p)
    }

    /// Forwards end of stream and errors from the bus into the channel, in order with the
    /// data; errors name `input_name`.
    fn forward_bus(bus: &gst::Bus, input_name: String, tx: Sender<SourceMsg>) {
        bus.set_sync_handler(move |_, msg| {
            use gst::MessageView;
            let out = match msg.view() {
                MessageView::Eos(_) => Some(SourceMsg::Eos),
                MessageView::Error(e) => {
                    let debug = e.debug().map(|d| d.to_string()).unwrap_or_default();
                    let detail = debug.lines().last().unwrap_or("").trim().to_string();
                    let reason = if detail.is_empty() || detail.len() > 200 {
                        e.error().to_string()
                    } else {
                        format!("{} ({detail})", e.error())
                    };
                    Some(SourceMsg::Error(classify(&input_name, &e.error(), reason)))
                }
                _ => None,
            };
            if let Some(m) = out {
                let _ = tx.send(m);
            }
            gst::BusSyncReply::Drop
        });
    }

    /// Whether the source is live (drops instead of blocking).
    pub(crate) fn is_live(&self) -> bool {
        self.live
    }

    /// Buffers dropped so far (live sources).
    pub(crate) fn drops(&self) -> (u64, u64) {
        (
            self.drops.audio.load(Ordering::Relaxed),
            self.drops.video.load(Ordering::Relaxed),
        )
    }

    /// Nothing decoded is waiting to be read: the reader keeps up with the source.
    pub fn caught_up(&self) -> bool {
        self.rx.as_ref().is_none_or(|rx| rx.is_empty())
    }

    /// Waits up to `wait` for the next message, or until `stop` is disconnected (the
    /// shutdown signal), whichever comes first.
    pub fn next(&self, stop: &Receiver<()>, wait: Duration) -> Next {
        let Some(rx) = self.rx.as_ref() else {
            return Next::Msg(SourceMsg::Eos);
        };
        crossbeam_channel::select! {
            recv(rx) -> m => Next::Msg(m.unwrap_or(SourceMsg::Eos)),
            recv(stop) -> _ => Next::Stop,
            default(wait) => Next::Idle,
        }
    }

    fn build_uri(
        input: &str,
        channel: Option<(u32, u32)>,
        cfg: &SourceConfig,
        delivery: &Delivery,
        pool_rx: &Receiver<Vec<f32>>,
        frame_pool_rx: &Receiver<Vec<u8>>,
    ) -> Result<gst::Pipeline, SourceError> {
        let uri = input_to_uri(input)?;
        let tx = delivery.tx.clone();
        let pipeline = gst::Pipeline::with_name("sentistream-source");
        let decode = gst::ElementFactory::make("uridecodebin")
            .property("uri", &uri)
            .build()
            .map_err(|e| pipeline_err(input, format!("uridecodebin unavailable ({e})")))?;
        pipeline.add(&decode).map_err(|e| pipeline_err(input, e))?;

        let video_desc = VIDEO_BRANCH
            .trim()
            .replace("{fps}", &cfg.video_fps.to_string())
            .replace("{width}", &cfg.video_width.to_string());
        let linked_audio = Arc::new(AtomicBool::new(false));
        let linked_video = Arc::new(AtomicBool::new(false));

        {
            let (tx, pool_rx, frame_pool_rx) = (tx.clone(), pool_rx.clone(), frame_pool_rx.clone());
            let delivery = delivery.clone();
            let (la, lv) = (linked_audio.clone(), linked_video.clone());
            let input_name = input.to_string();
            decode.connect_pad_added(move |dbin, pad| {
                let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
                let media = caps
                    .structure(0)
                    .map(|s| s.name().to_string())
                    .unwrap_or_default();
                let Some(pipeline) = dbin
                    .parent()
                    .and_then(|p| p.downcast::<gst::Pipeline>().ok())
                else {
                    return;
                };
                let result = if media == "audio/x-raw" && !la.swap(true, Ordering::SeqCst) {
                    let branch = match channel_branch(&caps, channel, &input_name) {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = tx.send(SourceMsg::Error(e));
                            return;
                        }
                    };
                    link_branch(&pipeline, pad, &branch, "audio").map(|sink| {
                        attach_audio(&sink, delivery.clone(), pool_rx.clone());
                    })
                } else if media == "video/x-raw" && !lv.swap(true, Ordering::SeqCst) {
                    link_branch(&pipeline, pad, &video_desc, "video").map(|sink| {
                        attach_video(&sink, delivery.clone(), frame_pool_rx.clone());
                    })
                } else {
                    // Extra or undecodable streams go nowhere, without stalling the rest.
                    link_branch(&pipeline, pad, "fakesink sync=false", "").map(|_| ())
                };
                if let Err(reason) = result {
                    let _ = tx.send(SourceMsg::Error(pipeline_err(&input_name, reason)));
                }
            });
        }
        announce_streams(&decode, &tx, linked_audio, linked_video, input);
        Ok(pipeline)
    }

    /// Total duration in seconds, once the pipeline knows it (a cheap query).
    pub fn duration(&self) -> Option<f64> {
        self.pipeline
            .query_duration::<gst::ClockTime>()
            .map(|d| d.nseconds() as f64 / 1e9)
    }

    /// Next message; a stall of [`STALL_TIMEOUT`] becomes an error, never a hang.
    pub fn recv(&self) -> SourceMsg {
        let Some(rx) = &self.rx else {
            return SourceMsg::Eos;
        };
        match rx.recv_timeout(STALL_TIMEOUT) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => SourceMsg::Error(SourceError::Stalled {
                input: self.input.clone(),
                secs: STALL_TIMEOUT.as_secs(),
            }),
            Err(RecvTimeoutError::Disconnected) => SourceMsg::Eos,
        }
    }

    /// Gives an audio buffer back for reuse, so decoding does not allocate per buffer.
    pub fn recycle_audio(&self, mut buf: Vec<f32>) {
        buf.clear();
        let _ = self.pool_tx.try_send(buf);
    }

    /// Gives a frame's pixel buffer back for reuse.
    pub fn recycle_frame(&self, mut buf: Vec<u8>) {
        buf.clear();
        let _ = self.frame_pool_tx.try_send(buf);
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        // Unblock streaming threads waiting on a full channel before stopping them.
        self.rx.take();
        let _ = self.pipeline.set_state(gst::State::Null);
        if let Some(bus) = self.pipeline.bus() {
            bus.unset_sync_handler();
        }
    }
}

/// When the decoder has no more pads: says which streams the input has (an error when
/// there is no audio).
fn announce_streams(
    decode: &gst::Element,
    tx: &Sender<SourceMsg>,
    la: Arc<AtomicBool>,
    lv: Arc<AtomicBool>,
    input: &str,
) {
    let tx = tx.clone();
    let input_name = input.to_string();
    decode.connect_no_more_pads(move |_| {
        let (has_audio, has_video) = (la.load(Ordering::SeqCst), lv.load(Ordering::SeqCst));
        let msg = if has_audio {
            SourceMsg::StreamsKnown {
                has_audio,
                has_video,
            }
        } else {
            SourceMsg::Error(SourceError::NoAudio {
                input: input_name.clone(),
            })
        };
        let _ = tx.send(msg);
    });
}

/// The audio branch: as is, or picking channel `index` of `count` with a mix matrix
/// (an error when the decoded audio has another channel count).
fn channel_branch(
    caps: &gst::Caps,
    channel: Option<(u32, u32)>,
    input: &str,
) -> Result<String, SourceError> {
    let Some((index, count)) = channel else {
        return Ok(AUDIO_BRANCH.trim().to_string());
    };
    let found = caps
        .structure(0)
        .and_then(|s| s.get::<i32>("channels").ok())
        .unwrap_or(1) as u32;
    if found != count {
        return Err(SourceError::Channels {
            input: input.to_string(),
            found,
            named: count,
        });
    }
    let row: Vec<&str> = (0..count)
        .map(|c| {
            if c == index {
                "(float)1.0"
            } else {
                "(float)0.0"
            }
        })
        .collect();
    Ok(AUDIO_BRANCH.trim().replacen(
        "audioconvert",
        &format!(
            "audioconvert mix-matrix=\"<<{}>>\" ! audio/x-raw,channels=1 ! audioconvert",
            row.join(",")
        ),
        1,
    ))
}

/// Builds a branch from a launch description, adds it and links `pad` to it.
fn link_branch(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    desc: &str,
    sink: &str,
) -> Result<Option<gst_app::AppSink>, String> {
    let bin = gst::parse::bin_from_description(desc, true)
        .map_err(|e| format!("bad pipeline description {desc:?}: {e}"))?;
    pipeline.add(&bin).map_err(|e| e.to_string())?;
    bin.sync_state_with_parent().map_err(|e| e.to_string())?;
    let sinkpad = bin.static_pad("sink").ok_or("branch has no sink pad")?;
    pad.link(&sinkpad)
        .map_err(|e| format!("cannot link decoder to branch: {e:?}"))?;
    if sink.is_empty() {
        return Ok(None);
    }
    let appsink = bin
        .by_name(sink)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| format!("pipeline description has no appsink named {sink:?}"))?;
    Ok(Some(appsink))
}

fn pts_seconds(buf: &gst::BufferRef) -> Option<f64> {
    buf.pts().map(|t| t.nseconds() as f64 / 1e9)
}

fn attach_audio(sink: &Option<gst_app::AppSink>, tx: Delivery, pool: Receiver<Vec<f32>>) {
    let Some(sink) = sink else { return };
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buf = sample.buffer().ok_or(gst::FlowError::Error)?;
                let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                let mut samples = pool.try_recv().unwrap_or_default();
                samples.extend(
                    map.as_slice()
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
                tx.data(
                    SourceMsg::Audio {
                        pts: pts_seconds(buf),
                        samples,
                    },
                    false,
                )?;
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

fn attach_video(sink: &Option<gst_app::AppSink>, tx: Delivery, pool: Receiver<Vec<u8>>) {
    let Some(sink) = sink else { return };
    let eos_tx = tx.tx.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .eos(move |_| {
                let _ = eos_tx.send(SourceMsg::VideoEnd);
            })
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let caps = sample.caps().ok_or(gst::FlowError::NotNegotiated)?;
                let st = caps.structure(0).ok_or(gst::FlowError::NotNegotiated)?;
                let w = st
                    .get::<i32>("width")
                    .map_err(|_| gst::FlowError::NotNegotiated)? as usize;
                let h = st
                    .get::<i32>("height")
                    .map_err(|_| gst::FlowError::NotNegotiated)? as usize;
                let buf = sample.buffer().ok_or(gst::FlowError::Error)?;
                let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                let src = map.as_slice();
                let row = w * 3;
                // GStreamer pads RGB rows to 4 bytes; copy them tightly packed.
                let stride = (row + 3) & !3;
                if src.len() < stride * (h - 1) + row {
                    return Err(gst::FlowError::Error);
                }
                let mut data = pool.try_recv().unwrap_or_default();
                for y in 0..h {
                    data.extend_from_slice(&src[y * stride..y * stride + row]);
                }
                let frame = VideoFrame {
                    pts: pts_seconds(buf).unwrap_or(0.0),
                    width: w as u32,
                    height: h as u32,
                    data,
                };
                tx.data(SourceMsg::Video(frame), true)?;
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// Decodes a whole (short) file: all its audio samples and frames. For clips and tests;
/// streams use [`Source::recv`].
pub fn decode_all(
    path: &Path,
    cfg: &SourceConfig,
) -> Result<(Vec<f32>, Vec<VideoFrame>), SourceError> {
    let src = Source::open(&path.to_string_lossy(), cfg)?;
    let (mut audio, mut frames) = (Vec::new(), Vec::new());
    loop {
        match src.recv() {
            SourceMsg::Audio { samples, .. } => {
                audio.extend_from_slice(&samples);
                src.recycle_audio(samples);
            }
            SourceMsg::Video(f) => frames.push(f),
            SourceMsg::Eos => return Ok((audio, frames)),
            SourceMsg::Error(e) => return Err(e),
            SourceMsg::StreamsKnown { .. } | SourceMsg::VideoEnd => {}
        }
    }
}
