//! Files for recorded calls: JSON lines, WebVTT and SRT subtitles carrying the transcript
//! and its sentiment. Every file is written incrementally and flushed per window, so a
//! crash leaves a valid file up to the last finished window.
//!
//! A path may contain `{stream}`, replaced by the stream id (one file per stream);
//! without it all streams share the file and cues name their stream.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::SinkError;
use crate::event::{Event, Named, Output, Stage};
use crate::sinks::Sink;

/// File formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (windows and stream notices).
    Jsonl,
    /// WebVTT subtitles (notices as NOTE blocks).
    Vtt,
    /// SubRip subtitles.
    Srt,
    /// Call summaries (`.summary.json`): a JSON object of each stream's latest summary,
    /// rewritten whole (atomically) at every summary.
    Summary,
    /// A self-contained HTML report per stream (`.html`), rewritten at every summary.
    Html,
}

impl Format {
    /// Format from a path's extension (`.summary.json`, `.jsonl`/`.json`, `.vtt`,
    /// `.srt`).
    pub fn from_path(p: &Path) -> Option<Self> {
        if p.to_string_lossy()
            .to_ascii_lowercase()
            .ends_with(".summary.json")
        {
            return Some(Self::Summary);
        }
        match p.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "jsonl" | "json" | "ndjson" => Some(Self::Jsonl),
            "vtt" => Some(Self::Vtt),
            "html" | "htm" => Some(Self::Html),
            "srt" => Some(Self::Srt),
            _ => None,
        }
    }
}

struct Open {
    w: BufWriter<File>,
    path: PathBuf,
    cue: u64,
}

/// A file sink of one format.
pub struct FileSink {
    template: PathBuf,
    format: Format,
    files: HashMap<String, Open>,
    /// Streams seen so far (a shared file names the stream in cues once there are two).
    streams: Vec<String>,
    /// Summary files: latest summary per stream, per file.
    summaries: HashMap<PathBuf, serde_json::Map<String, serde_json::Value>>,
    /// HTML reports: each stream's window events so far.
    pages: HashMap<String, Vec<serde_json::Value>>,
}

/// `HH:MM:SS.mmm` (VTT) or `HH:MM:SS,mmm` (SRT).
pub(crate) fn timestamp(t: f64, sep: char) -> String {
    let ms = (t.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// The cue text of a window: `[positive +2.10 ubm] transcript`.
pub(crate) fn cue_text(e: &Event, with_stream: bool) -> String {
    let mut s = String::new();
    if with_stream {
        s.push_str(&e.stream);
        s.push_str(": ");
    }
    if let (Some(score), Some(p)) = (e.score, e.polarity) {
        let stage = e.stage.map_or("", Stage::label);
        let pol = p.name();
        s.push_str(&format!("[{pol} {score:+.2} {stage}] "));
    }
    // A blank line would end the cue; "-->" would confuse parsers.
    let text = e.text.replace("-->", "->");
    let text: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if text.is_empty() {
        s.push_str("(no speech recognised)");
    } else {
        s.push_str(&text.join("\n"));
    }
    s
}

impl FileSink {
    /// A sink writing `format` to `template`. A single file is created now, so an
    /// output that cannot be written fails before any work; with `{stream}` in the
    /// name, files are created on each stream's first event and the folder is checked
    /// for writing now.
    pub fn new(template: &Path, format: Format) -> Result<Self, SinkError> {
        let dir = template
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(SinkError::Io {
                target: template.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("folder {} does not exist", dir.display()),
                ),
            });
        }
        let mut sink = Self {
            template: template.into(),
            format,
            files: HashMap::new(),
            streams: Vec::new(),
            summaries: HashMap::new(),
            pages: HashMap::new(),
        };
        if matches!(format, Format::Summary | Format::Html) {
            let path = sink.path_for("");
            if sink.shared() && format == Format::Summary {
                sink.rewrite(&path, serde_json::Map::new())?;
            } else {
                check_writable(dir).map_err(|source| SinkError::Io {
                    target: template.display().to_string(),
                    source,
                })?;
            }
        } else if sink.shared() {
            sink.file("")?;
        } else {
            check_writable(dir).map_err(|source| SinkError::Io {
                target: template.display().to_string(),
                source,
            })?;
        }
        Ok(sink)
    }

    fn shared(&self) -> bool {
        !self.template.to_string_lossy().contains("{stream}")
    }

    fn path_for(&self, stream: &str) -> PathBuf {
        PathBuf::from(
            self.template
                .to_string_lossy()
                .replace("{stream}", &sanitize(stream)),
        )
    }

    /// Writes a summary file whole: to a temporary name, then renamed over it.
    fn rewrite(
        &mut self,
        path: &Path,
        map: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), SinkError> {
        let text = serde_json::to_string_pretty(&map).map_err(|e| SinkError::Io {
            target: path.display().to_string(),
            source: e.into(),
        })?;
        write_whole(path, &(text + "\n"))?;
        self.summaries.insert(path.to_path_buf(), map);
        Ok(())
    }

    /// Keeps a stream's windows; writes its page at every summary (atomically).
    fn page(&mut self, out: &Output) -> Result<(), SinkError> {
        match out {
            Output::Window(e) => {
                let v = serde_json::to_value(e).map_err(|err| SinkError::Io {
                    target: self.template.display().to_string(),
                    source: err.into(),
                })?;
                self.pages
                    .entry(e.call_id().to_string())
                    .or_default()
                    .push(v);
                Ok(())
            }
            Output::Summary(s) => {
                let path = self.path_for(&s.stream);
                let events = self.pages.get(&s.stream).map_or(&[][..], |v| &v[..]);
                let summary = serde_json::to_value(&s.summary).unwrap_or_default();
                let big = events
                    .iter()
                    .filter_map(|e| e["score"].as_f64())
                    .any(|v| v.abs() > 1.0);
                let html = crate::report::call_page(
                    &format!("sentistream: {}", s.stream),
                    events,
                    &summary,
                    if big { 3.0 } else { 1.0 },
                );
                write_whole(&path, &html)
            }
            Output::Status(_) => Ok(()),
        }
    }

    /// Records a stream's latest summary in its summary file.
    fn summary(&mut self, out: &Output) -> Result<(), SinkError> {
        let Output::Summary(s) = out else {
            return Ok(());
        };
        let path = self.path_for(&s.stream);
        let mut map = self.summaries.remove(&path).unwrap_or_default();
        let value = serde_json::to_value(&s.summary).map_err(|e| SinkError::Io {
            target: path.display().to_string(),
            source: e.into(),
        })?;
        map.insert(s.stream.clone(), value);
        self.rewrite(&path, map)
    }

    fn file(&mut self, stream: &str) -> Result<&mut Open, SinkError> {
        let key = if self.shared() { "" } else { stream };
        if !self.files.contains_key(key) {
            let path = self.path_for(stream);
            let io = |source| SinkError::Io {
                target: path.display().to_string(),
                source,
            };
            let mut w = BufWriter::new(File::create(&path).map_err(io)?);
            if self.format == Format::Vtt {
                w.write_all(b"WEBVTT\n\n").map_err(io)?;
                w.flush().map_err(io)?;
            }
            self.files.insert(
                key.to_string(),
                Open {
                    w,
                    path: path.clone(),
                    cue: 0,
                },
            );
        }
        Ok(self.files.get_mut(key).expect("inserted above"))
    }
}

/// Writes a file whole, atomically: to a temporary name beside it, then renamed over it
/// (a reader never sees half a summary or report).
pub(crate) fn write_whole(path: &Path, text: &str) -> Result<(), SinkError> {
    let io = |source| SinkError::Io {
        target: path.display().to_string(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Whether files can be created in `dir` (a probe file is made and removed).
fn check_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".sentistream-probe-{}", std::process::id()));
    File::create(&probe)?;
    std::fs::remove_file(&probe)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Sink for FileSink {
    fn name(&self) -> String {
        self.template.display().to_string()
    }

    fn write(&mut self, out: &Output) -> Result<(), SinkError> {
        match self.format {
            Format::Summary => return self.summary(out),
            Format::Html => return self.page(out),
            _ => {}
        }
        let stream = out.stream().to_string();
        if !self.streams.contains(&stream) {
            self.streams.push(stream.clone());
        }
        let with_stream = self.shared() && self.streams.len() > 1;
        let format = self.format;
        let f = self.file(&stream)?;
        let text = match (format, out) {
            (Format::Jsonl, o) => format!("{}\n", o.to_json()),
            (Format::Vtt | Format::Srt, Output::Window(e)) => {
                // WebVTT writes milliseconds after '.', SRT after ','.
                let sep = if format == Format::Vtt { '.' } else { ',' };
                f.cue += 1;
                format!(
                    "{}\n{} --> {}\n{}\n\n",
                    f.cue,
                    timestamp(e.start, sep),
                    timestamp(e.end.max(e.start + 0.001), sep),
                    cue_text(e, with_stream)
                )
            }
            (Format::Vtt, Output::Status(s)) => format!(
                "NOTE stream {} {} at {:.3} s{}\n\n",
                s.stream,
                serde_json::to_value(s.status)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                s.at,
                s.reason
                    .as_deref()
                    .map(|r| format!(": {}", r.replace("-->", "->").replace('\n', " ")))
                    .unwrap_or_default()
            ),
            (Format::Vtt, Output::Summary(s)) => format!(
                "NOTE summary of {}: {} windows, {:.0} s of speech, trend {}\n\n",
                s.stream, s.summary.windows, s.summary.speech_s, s.summary.trend_word
            ),
            (Format::Srt, Output::Status(_) | Output::Summary(_)) => return Ok(()), // SRT has no comments.
            (Format::Summary | Format::Html, _) => return Ok(()),
        };
        let io = |source| SinkError::Io {
            target: f.path.display().to_string(),
            source,
        };
        f.w.write_all(text.as_bytes()).map_err(io)?;
        f.w.flush().map_err(io)
    }

    fn close(&mut self) -> Result<(), SinkError> {
        for f in self.files.values_mut() {
            f.w.flush().map_err(|source| SinkError::Io {
                target: f.path.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }
}

/// A parsed subtitle cue.
#[derive(Debug, Clone, PartialEq)]
pub struct Cue {
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Text lines joined by newlines.
    pub text: String,
}

fn parse_ts(s: &str, sep: char) -> Result<f64, String> {
    let (hms, ms) = s
        .trim()
        .rsplit_once(sep)
        .ok_or_else(|| format!("bad timestamp {s:?}"))?;
    let parts: Vec<&str> = hms.split(':').collect();
    if parts.len() != 3 || ms.len() != 3 {
        return Err(format!("bad timestamp {s:?}"));
    }
    let n = |x: &str| x.parse::<u64>().map_err(|_| format!("bad timestamp {s:?}"));
    let (h, m, sec, milli) = (n(parts[0])?, n(parts[1])?, n(parts[2])?, n(ms)?);
    if m >= 60 || sec >= 60 {
        return Err(format!("bad timestamp {s:?}"));
    }
    Ok((h * 3600 + m * 60 + sec) as f64 + milli as f64 / 1000.0)
}

fn parse_blocks(body: &str, sep: char, numbered: bool) -> Result<Vec<Cue>, String> {
    let mut cues = Vec::new();
    for block in body
        .split("\n\n")
        .map(|b| b.trim_matches('\n'))
        .filter(|b| !b.is_empty())
    {
        if block.starts_with("NOTE") {
            continue;
        }
        let mut lines = block.lines();
        let mut first = lines.next().ok_or("empty cue")?;
        if !first.contains("-->") {
            if numbered {
                first
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("cue number expected, got {first:?}"))?;
            }
            first = lines.next().ok_or("cue without timing")?;
        } else if numbered {
            return Err(format!("SRT cue without a number: {first:?}"));
        }
        let (a, b) = first
            .split_once("-->")
            .ok_or_else(|| format!("timing line expected, got {first:?}"))?;
        let (start, end) = (
            parse_ts(a, sep)?,
            parse_ts(b.split_whitespace().next().unwrap_or(""), sep)?,
        );
        if end < start {
            return Err(format!("cue ends before it starts: {first:?}"));
        }
        let text: Vec<&str> = lines.collect();
        if text.is_empty() {
            return Err(format!("cue without text at {first:?}"));
        }
        cues.push(Cue {
            start,
            end,
            text: text.join("\n"),
        });
    }
    Ok(cues)
}

/// Parses (and so validates) a WebVTT file.
pub fn parse_vtt(s: &str) -> Result<Vec<Cue>, String> {
    let body = s
        .strip_prefix("WEBVTT")
        .ok_or("a WebVTT file starts with WEBVTT")?;
    if !body.starts_with('\n') && !body.is_empty() {
        return Err("WEBVTT must be followed by a line break".into());
    }
    parse_blocks(body, '.', false)
}

/// Parses (and so validates) an SRT file.
pub fn parse_srt(s: &str) -> Result<Vec<Cue>, String> {
    parse_blocks(s, ',', true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(3723.4567, '.'), "01:02:03.457");
        assert_eq!(timestamp(0.0, ','), "00:00:00,000");
        assert_eq!(parse_ts("01:02:03.457", '.').unwrap(), 3723.457);
        assert!(parse_ts("1:2", '.').is_err());
    }

    #[test]
    fn parsers_reject_broken_files() {
        assert!(parse_vtt("no header").is_err());
        assert!(parse_vtt("WEBVTT\n\n00:00:01.000 --> 00:00:00.500\nx\n").is_err());
        assert!(parse_srt("00:00:01,000 --> 00:00:02,000\nx\n").is_err());
        assert!(parse_srt("1\n00:00:01,000 --> 00:00:02,000\n").is_err());
        assert_eq!(
            parse_srt("1\n00:00:01,000 --> 00:00:02,000\nhi\n\n").unwrap()[0].text,
            "hi"
        );
    }
}
