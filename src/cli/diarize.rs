//! `diarize`: who spoke when in a recording, as RTTM, without transcribing; with a
//! reference (RTTM or a call's turns JSON) it also prints how well it did, and what it
//! cost. The same segmenter and diarizer as `annotate --speakers` and `run --speakers`.

use std::path::Path;
use std::time::Instant;

use super::Context;
use super::args::DiarizeArgs;
use crate::diarize::Diarizer;
use crate::diarize::campp::CamPlus;
use crate::diarize::score::{self, Turn};
use crate::error::{Error, Result, SourceError};
use crate::segment::{OpenSpeech, Vad, Window, WindowSink, cut_input};
use crate::source::{Input, SAMPLE_RATE};

/// Reads reference turns: `.rttm`, else the turns JSON.
fn reference(path: &Path) -> Result<Vec<Turn>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("reference {}: {e}", path.display())))?;
    let turns = if path.extension().is_some_and(|e| e == "rttm") {
        score::read_rttm(&text)
    } else {
        score::read_turns_json(&text)
    };
    turns.map_err(|e| {
        Error::Usage(format!(
            "reference {}: {e}; give an RTTM file (.rttm) or a JSON file with \"turns\": [{{\"speaker\", \"start\", \"end\"}}]",
            path.display()
        ))
    })
}

/// Diarized windows (audio dropped); speech still going on is watched for speaker
/// changes as a live stream's is.
struct Labelled<'a> {
    d: &'a mut Diarizer,
    out: Vec<Window>,
}

impl WindowSink for Labelled<'_> {
    fn window(&mut self, w: Window) {
        let from = self.out.len();
        self.d.process(w, &mut self.out);
        self.out[from..]
            .iter_mut()
            .for_each(|w| w.audio = Vec::new());
    }

    fn open(&mut self, open: Option<OpenSpeech<'_>>) -> Option<f64> {
        self.d.watch(open)
    }
}

/// Decodes `input` and returns its diarized windows (audio dropped), the seconds decoded
/// and the diarizer (its figures).
fn diarize_file(
    input: &str,
    ctx: &Context,
    net: std::sync::Arc<CamPlus>,
    online: bool,
) -> Result<(Vec<Window>, f64, Diarizer)> {
    let cfg = &ctx.cfg;
    let vad = cfg
        .models
        .vad
        .as_deref()
        .unwrap_or(Path::new(crate::assets::VAD_FILE));
    let vad_path = ctx.models.resolve(vad);
    let input = Input::Uri(input.into());
    let mut d = Diarizer::new(&cfg.diarize, net);
    if !online {
        d.learn(&input, &cfg.source, &cfg.segment, Vad::load(&vad_path)?)?;
    }
    let mut sink = Labelled {
        d: &mut d,
        out: Vec::new(),
    };
    let vad = Vad::load(&vad_path)?;
    let samples = cut_input(&input, &cfg.source, &cfg.segment, vad, &mut sink)?;
    let out = sink.out;
    if samples == 0 {
        return Err(SourceError::NoAudio {
            input: input.name().into(),
        }
        .into());
    }
    Ok((out, samples as f64 / SAMPLE_RATE as f64, d))
}

/// Runs `diarize`.
pub(super) fn diarize(a: &DiarizeArgs, mut ctx: Context) -> Result<i32> {
    ctx.cfg.diarize.enabled = true;
    if let Some(n) = a.speakers {
        ctx.cfg.diarize.speakers = n;
    }
    ctx.cfg.validate()?;
    let truth = a.reference.as_deref().map(reference).transpose()?;
    let model = ctx.models.resolve(&ctx.cfg.diarize.model);
    let net = std::sync::Arc::new(CamPlus::load(&model)?);
    let t0 = Instant::now();
    let (windows, media_s, d) = diarize_file(&a.input, &ctx, net, a.online)?;
    let wall = t0.elapsed().as_secs_f64();
    let turns: Vec<Turn> = windows
        .iter()
        .map(|w| Turn {
            speaker: format!("S{}", w.speaker.unwrap_or(0)),
            start: w.start,
            end: w.end,
        })
        .collect();
    let name = crate::plan::default_id(&a.input);
    let rttm = score::write_rttm(&name, &turns);
    match &a.out {
        Some(p) => std::fs::write(p, &rttm)
            .map_err(|e| Error::Usage(format!("--out {}: {e}", p.display())))?,
        None => print!("{rttm}"),
    }
    eprintln!(
        "{name}: {} speaker(s), {} windows, {media_s:.1} s of audio; diarization {:.1} ms per window ({} segments), RTF {:.3}; whole run (decode + VAD + diarization) {wall:.1} s",
        d.speakers(),
        windows.len(),
        d.busy_s * 1e3 / windows.len().max(1) as f64,
        d.segments_done,
        d.busy_s / media_s.max(1e-9),
    );
    if let Some(truth) = truth {
        let s = score::score(&truth, &turns);
        eprintln!(
            "against {}: DER {:.1}% (missed {:.1} s, false alarm {:.1} s, confusion {:.1} s of {:.1} s); speech time to the right speaker {:.1}%; turns right {}/{}; speakers {} found, {} in the reference",
            a.reference.as_ref().expect("truth read").display(),
            100.0 * s.der,
            s.missed_s,
            s.false_alarm_s,
            s.confusion_s,
            s.reference_s,
            100.0 * s.attributed,
            s.turns_right,
            s.turns,
            s.speakers.1,
            s.speakers.0,
        );
        if a.json {
            println!("{}", serde_json::to_string(&s).expect("score serialises"));
        }
    }
    Ok(0)
}
