//! Stereo calls (`annotate --channels agent,customer`): each channel is cut and
//! transcribed on its own and its windows carry the channel's speaker; one summary covers
//! the call. samples/call-stereo.ogg (scripts/make-stereo-call) holds the two-speaker call
//! with the agent on the left and the customer on the right; samples/call.json has the
//! true turns.

mod common;

use serde_json::Value;

fn have_models() -> bool {
    common::model("ggml-base-q8_0.bin").is_some()
        && common::model("ggml-silero-v6.2.0.bin").is_some()
}

fn truth() -> Vec<(String, f64, f64)> {
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(common::repo("samples/call.json")).unwrap())
            .unwrap();
    j["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["speaker"].as_str().unwrap().to_string(),
                t["start"].as_f64().unwrap(),
                t["end"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_stereo_call_attributes_every_window_to_its_channels_speaker() {
    if !have_models() {
        return;
    }
    let call = common::repo("samples/call-stereo.ogg")
        .display()
        .to_string();
    let out = common::sentistream_ok(&[
        "annotate",
        &call,
        "--channels",
        "agent,customer",
        "--language",
        "en",
        "--no-progress",
        "--no-cascade",
    ]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let windows: Vec<&Value> = lines.iter().filter(|e| e.get("seq").is_some()).collect();
    let turns = truth();
    assert!(
        windows.len() >= turns.len() - 1,
        "{} windows for {} turns",
        windows.len(),
        turns.len()
    );
    for w in &windows {
        let (s, e) = (w["start"].as_f64().unwrap(), w["end"].as_f64().unwrap());
        let overlap = |t: &(String, f64, f64)| (e.min(t.2) - s.max(t.1)).max(0.0);
        let best = turns
            .iter()
            .max_by(|a, b| overlap(a).total_cmp(&overlap(b)))
            .unwrap();
        assert!(overlap(best) > 0.0, "a window on no turn: {w}");
        assert_eq!(w["speaker"], best.0.as_str(), "{w}");
        let channel = if best.0 == "agent" { 0 } else { 1 };
        assert_eq!(w["channel"], channel);
        assert_eq!(w["stream"], format!("call-stereo.ogg:{}", best.0));
    }
    let summaries: Vec<&Value> = lines
        .iter()
        .filter(|e| e.get("summary").is_some())
        .collect();
    assert_eq!(summaries.len(), 1, "one summary for the call");
    let s = &summaries[0]["summary"];
    assert_eq!(summaries[0]["stream"], "call-stereo.ogg");
    assert_eq!(s["complete"], true);
    // Talk time's truth: a speaker's consecutive lines with nobody speaking between them
    // are one turn, its pause included, as a pause between sentences of one line is
    // (the agent has two lines 0.4 s apart).
    let mut merged: Vec<(String, f64, f64)> = Vec::new();
    for t in &turns {
        match merged.last_mut() {
            Some(m) if m.0 == t.0 => m.2 = t.2,
            _ => merged.push(t.clone()),
        }
    }
    for sp in s["speakers"].as_array().unwrap() {
        let name = sp["speaker"].as_str().unwrap();
        let truth_s: f64 = merged
            .iter()
            .filter(|t| t.0 == name)
            .map(|t| t.2 - t.1)
            .sum();
        let truth_turns = merged.iter().filter(|t| t.0 == name).count();
        let got = sp["talk_s"].as_f64().unwrap();
        eprintln!(
            "{name}: talk {got:.2} s, truth {truth_s:.2} s, turns {}",
            sp["turns"]
        );
        assert!((got - truth_s).abs() <= 0.5, "{name}: {got} vs {truth_s}");
        assert_eq!(
            sp["turns"].as_u64().unwrap() as usize,
            truth_turns,
            "{name}"
        );
    }
    assert_eq!(s["speakers"].as_array().unwrap().len(), 2);
}

#[test]
fn channels_that_do_not_match_the_recording_are_clear_errors() {
    if !have_models() {
        return;
    }
    let mono = common::repo("samples/sample.mp4").display().to_string();
    let o = common::sentistream(&[
        "annotate",
        &mono,
        "--channels",
        "agent,customer",
        "--no-progress",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("1 audio channel(s), but --channels names 2"),
        "{err}"
    );
    assert!(
        err.contains("drop --channels for a mono recording"),
        "{err}"
    );
    let stereo = common::repo("samples/call-stereo.ogg")
        .display()
        .to_string();
    let o = common::sentistream(&["annotate", &stereo, "--channels", "a,b,c", "--no-progress"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("2 audio channel(s), but --channels names 3"),
        "{err}"
    );
    let o = common::sentistream(&["annotate", &stereo, "--channels", "a,a"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("one distinct, non-empty name per channel"),
        "{err}"
    );
}
