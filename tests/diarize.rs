//! Speaker diarization with the real CAM++ model: the network against a PyTorch
//! reference, the `diarize` command on real telephone speech (pyannote's sample) and on
//! our generated 2- and 3-speaker calls (offline and online), `annotate --speakers` end
//! to end (events, splits, summary), and bad input.

mod common;

use sentistream::diarize::campp::CamPlus;
use sentistream::diarize::fbank::{Fbank, N_BINS};
use serde_json::Value;

const CAMPP: &str = "campplus/campplus_cn_en_common.pt";
const PYANNOTE_WAV: &str = "test/pyannote-sample.wav";
const PYANNOTE_RTTM: &str = "test/pyannote-sample.rttm";

#[test]
fn campp_matches_the_pytorch_reference() {
    let (Some(model), Some(wav)) = (common::model(CAMPP), common::model(PYANNOTE_WAV)) else {
        return;
    };
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo("tests/fixtures/campp_reference.json")).unwrap(),
    )
    .unwrap();
    let net = CamPlus::load(&model).unwrap();
    let audio = sentistream::source::decode_all(&wav, &Default::default())
        .unwrap()
        .0;
    let (mut fbank, mut feats) = (Fbank::new(), Vec::new());
    for (i, seg) in r["segments"].as_array().unwrap().iter().enumerate() {
        let at = |k: usize| (seg[k].as_f64().unwrap() * 16000.0).round() as usize;
        fbank.compute(&audio[at(0)..at(1)], &mut feats);
        let frames = feats.len() / N_BINS;
        assert_eq!(frames as u64, r["fbank_frames"][i].as_u64().unwrap());
        for (k, want) in r["fbank_first"][i].as_array().unwrap().iter().enumerate() {
            let d = (feats[k] as f64 - want.as_f64().unwrap()).abs();
            assert!(d < 2e-3, "segment {i} fbank[{k}] off by {d}");
        }
        let x = tch::Tensor::from_slice(&feats).reshape([1, frames as i64, N_BINS as i64]);
        let e: Vec<f32> = Vec::try_from(net.embed(&x).flatten(0, -1)).unwrap();
        let want: Vec<f32> = r["embedding"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let max = e
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(max < 2e-3, "segment {i}: embedding off by up to {max}");
    }
}

/// Runs `diarize FILE --reference REF --json [extra]`; the score line.
fn diarize(file: &str, reference: &str, extra: &[&str]) -> Value {
    let mut args = vec!["diarize", file, "--reference", reference, "--json"];
    args.extend_from_slice(extra);
    let out = common::sentistream_ok(&args);
    let last = out.lines().last().expect("a score line");
    serde_json::from_str(last).unwrap()
}

fn have(names: &[&str]) -> bool {
    names.iter().all(|n| common::model(n).is_some())
}

#[test]
fn real_telephone_speech_is_split_into_its_turns() {
    if !have(&[CAMPP, PYANNOTE_WAV, PYANNOTE_RTTM, "ggml-silero-v6.2.0.bin"]) {
        return;
    }
    let m = common::models_dir();
    let (wav, rttm) = (m.join(PYANNOTE_WAV), m.join(PYANNOTE_RTTM));
    for mode in [&[][..], &["--online"][..]] {
        let s = diarize(wav.to_str().unwrap(), rttm.to_str().unwrap(), mode);
        // The VAD alone makes two 11 s windows of this call; the diarizer splits them.
        assert_eq!(s["speakers"], serde_json::json!([2, 2]), "{mode:?}: {s}");
        assert!(s["turns_right"].as_u64().unwrap() >= 8, "{mode:?}: {s}");
        assert!(s["attributed"].as_f64().unwrap() >= 0.88, "{mode:?}: {s}");
        assert!(s["der"].as_f64().unwrap() < 0.25, "{mode:?}: {s}");
    }
}

#[test]
fn generated_two_and_three_speaker_calls_are_attributed() {
    if !have(&[CAMPP, "ggml-silero-v6.2.0.bin"]) {
        return;
    }
    let call = common::repo("samples/call.mp4");
    let call_ref = common::repo("samples/call.json");
    let meeting = common::repo("samples/meeting.ogg");
    let meeting_ref = common::repo("samples/meeting.json");
    for (file, reference, speakers, need) in
        [(&call, &call_ref, 2, 0.9), (&meeting, &meeting_ref, 3, 0.8)]
    {
        for mode in [&[][..], &["--online"][..]] {
            let s = diarize(file.to_str().unwrap(), reference.to_str().unwrap(), mode);
            // The number of speakers is estimated, not given.
            // A recording read twice does better than live.
            let need = if mode.is_empty() {
                assert_eq!(s["speakers"][1], speakers, "{file:?}: {s}");
                0.97
            } else {
                need
            };
            assert!(
                s["attributed"].as_f64().unwrap() >= need,
                "{file:?} {mode:?}: {s}"
            );
        }
    }
}

#[test]
fn annotate_with_speakers_labels_and_summarises_each_speaker() {
    if !have(&[CAMPP, "ggml-silero-v6.2.0.bin", "ggml-base-q8_0.bin"]) {
        return;
    }
    let meeting = common::repo("samples/meeting.ogg");
    let m = meeting.to_str().unwrap();
    // annotate learns the speakers first; run labels windows as they come (live).
    check_speakers(&[
        "annotate",
        m,
        "--speakers",
        "3",
        "--language",
        "en",
        "--no-progress",
        "--no-sentiment",
    ]);
    check_speakers(&[
        "run",
        m,
        "--speakers",
        "auto",
        "--language",
        "en",
        "--no-sentiment",
    ]);
}

/// Runs `args` on the meeting and checks each window's speaker against the truth.
fn check_speakers(args: &[&str]) {
    let out = common::sentistream(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = common::events(&out);
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo("samples/meeting.json")).unwrap(),
    )
    .unwrap();
    // Each window's speaker is the truth speaker it overlaps most; map S* to names by
    // majority and count agreeing windows.
    let turns = truth["turns"].as_array().unwrap();
    let truth_of = |a: f64, b: f64| -> String {
        turns
            .iter()
            .max_by(|x, y| {
                let ov = |t: &Value| {
                    (t["end"].as_f64().unwrap().min(b) - t["start"].as_f64().unwrap().max(a))
                        .max(0.0)
                };
                ov(x).total_cmp(&ov(y))
            })
            .map(|t| t["speaker"].as_str().unwrap().to_string())
            .unwrap()
    };
    let mut pairs = std::collections::HashMap::<(String, String), usize>::new();
    for (k, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], k as u64, "gapless seq after splits");
        let s = e["speaker"]
            .as_str()
            .expect("every window has a speaker")
            .to_string();
        assert!(s.starts_with('S'), "{s}");
        assert!(
            e["voiced_s"].as_f64().unwrap()
                <= e["end"].as_f64().unwrap() - e["start"].as_f64().unwrap() + 1e-6
        );
        let t = truth_of(e["start"].as_f64().unwrap(), e["end"].as_f64().unwrap());
        *pairs.entry((s, t)).or_default() += 1;
    }
    // Each label counts its majority speaker (live, one voice may get two labels).
    let labels: std::collections::BTreeSet<&String> = pairs.keys().map(|k| &k.0).collect();
    let right: usize = labels
        .iter()
        .map(|s| {
            pairs
                .iter()
                .filter(|((h, _), _)| h == *s)
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0)
        })
        .sum();
    let need = if args[0] == "run" { 0.8 } else { 0.95 };
    assert!(
        right as f64 >= need * events.len() as f64,
        "{args:?}: {right} of {} windows with their speaker's label: {pairs:?}",
        events.len()
    );
    let summary = common::outputs(&out)
        .into_iter()
        .rfind(|o| o.get("summary").is_some())
        .expect("a call summary");
    let speakers = summary["summary"]["speakers"].as_array().unwrap();
    assert!((3..=4).contains(&speakers.len()), "{args:?}: {summary}");
    let talk: f64 = speakers.iter().map(|s| s["talk_s"].as_f64().unwrap()).sum();
    let truth_talk: f64 = turns
        .iter()
        .map(|t| t["end"].as_f64().unwrap() - t["start"].as_f64().unwrap())
        .sum();
    assert!(
        (talk - truth_talk).abs() < 3.0,
        "talk {talk:.2} s vs truth {truth_talk:.2} s"
    );
    if args[0] == "annotate" {
        // A recording: each speaker's talk time within 0.5 s of its voice's true time.
        for sp in speakers {
            let label = sp["speaker"].as_str().unwrap();
            let (name, _) = pairs
                .iter()
                .filter(|((h, _), _)| h == label)
                .max_by_key(|(_, n)| **n)
                .map(|((_, t), n)| (t.clone(), *n))
                .unwrap();
            let truth_s: f64 = turns
                .iter()
                .filter(|t| t["speaker"] == name.as_str())
                .map(|t| t["end"].as_f64().unwrap() - t["start"].as_f64().unwrap())
                .sum();
            let got = sp["talk_s"].as_f64().unwrap();
            assert!(
                (got - truth_s).abs() <= 0.5,
                "{label} ({name}): talk {got:.2} s vs truth {truth_s:.2} s"
            );
        }
    }
}

#[test]
fn diarization_bad_input_is_a_clear_error() {
    let stereo = common::repo("samples/call-stereo.ogg");
    let out = common::sentistream(&[
        "annotate",
        stereo.to_str().unwrap(),
        "--channels",
        "agent,customer",
        "--speakers",
        "2",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("use one or the other"), "{err}");
    for bad in ["0", "many", "40"] {
        let out = common::sentistream(&["diarize", stereo.to_str().unwrap(), "--speakers", bad]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a speaker count"), "{bad}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad_ref = dir.path().join("bad.rttm");
    std::fs::write(&bad_ref, "SPEAKER x 1 zero\n").unwrap();
    let out = common::sentistream(&[
        "diarize",
        stereo.to_str().unwrap(),
        "--reference",
        bad_ref.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.rttm") && err.contains("line 1"), "{err}");
    let missing = dir.path().join("nope.wav");
    let out = common::sentistream(&["diarize", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.wav"));
}
