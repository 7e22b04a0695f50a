//! Backbone latency on one tensor, for the side-by-side benchmark (`bench/side_by_side.py`
//! gives onnxruntime the same tensor). Prints one JSON object; asserts nothing.
//!
//! `--variant` builds the plan other ways, to compare what tract offers (see `build`);
//! `--compare a,b,…` times several by alternating runs; `--profile` prints where the time goes,
//! by operator and by node, with tract's per-node evaluation hook.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use tract_onnx::prelude::*;

#[derive(Parser)]
struct Args {
    /// Raw little-endian f32 tensor, 1×3×224×224 (default: chelsea.jpg preprocessed).
    #[arg(long)]
    tensor: Option<PathBuf>,
    #[arg(long, default_value_t = 200)]
    runs: usize,
    #[arg(long, default_value = "shipped")]
    variant: String,
    #[arg(long)]
    profile: bool,
    /// Compare variants (comma-separated) by alternating single runs, so machine noise hits
    /// all of them alike; prints a line per variant.
    #[arg(long)]
    compare: Option<String>,
    /// Write the preprocessed default tensor here and exit (so onnxruntime gets the same one).
    #[arg(long)]
    write_tensor: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let tensor = match &args.tensor {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {path:?}"))?;
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect::<Vec<f32>>()
        }
        None => default_tensor()?,
    };
    if let Some(path) = &args.write_tensor {
        let bytes: Vec<u8> = tensor.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(path, bytes)?;
        return Ok(());
    }
    anyhow::ensure!(tensor.len() == 3 * 224 * 224, "expected 1×3×224×224 values");

    if let Some(variants) = &args.compare {
        return compare(variants, &tensor, args.runs);
    }
    let started = Instant::now();
    let plan = build(&args.variant)?;
    let load_ms = ms(started.elapsed());
    let input = Tensor::from_shape(&[1, 3, 224, 224], &tensor)?.into_tvalue();
    let mut state = plan.spawn()?;
    let first = Instant::now();
    let outputs = state.run(tvec![input.clone()])?;
    let first_ms = ms(first.elapsed());
    let logits: Vec<f32> = outputs[1]
        .to_plain_array_view::<f32>()?
        .iter()
        .copied()
        .collect();
    for _ in 0..10 {
        state.run(tvec![input.clone()])?;
    }
    let mut times = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let t = Instant::now();
        state.run(tvec![input.clone()])?;
        times.push(t.elapsed());
    }
    times.sort();
    let top1 = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i);
    println!(
        "{}",
        serde_json::json!({
            "variant": args.variant,
            "load_ms": load_ms,
            "first_run_ms": first_ms,
            "median_ms": ms(times[times.len() / 2]),
            "p90_ms": ms(times[times.len() * 9 / 10]),
            "top1": top1,
            "logits": logits,
        })
    );
    if args.profile {
        profile(&plan, input, 50)?;
    }
    Ok(())
}

/// The bundled ONNX at 1×3×224×224, typed, not yet decluttered.
fn typed() -> TractResult<TypedModel> {
    tract_onnx::onnx()
        .model_for_read(&mut Cursor::new(vision::BUNDLED_MODEL))?
        .with_input_fact(0, f32::fact([1, 3, 224, 224]).into())?
        .with_outputs_by_name(["features", "logits"])?
        .into_typed()
}

/// The shipped NNEF, read as the functions read it.
fn nnef() -> TractResult<TypedModel> {
    tract_nnef::nnef()
        .with_onnx()
        .model_for_read(&mut Cursor::new(vision::BUNDLED_NNEF))
}

/// `model` with tract's channels-last rewrite (`conv_nhwc`) of every convolution.
fn channels_last(mut model: TypedModel) -> Result<TypedModel> {
    let transform = tract_onnx::tract_core::transform::get_transform("conv_nhwc")?
        .context("conv_nhwc is registered")?;
    model.transform(&*transform)?;
    Ok(model)
}

fn build(variant: &str) -> Result<Arc<TypedRunnableModel>> {
    let plan = match variant {
        // What the functions run: the shipped NNEF, codegen only.
        "shipped" => vision::Backbone::bundled()?.plan().clone(),
        // The ONNX, parsed and fully optimised at load.
        "onnx" => typed()?.into_optimized()?.into_runnable()?,
        // The ONNX decluttered, stride-2 depthwise layers made stride 1 + subsampling, codegen.
        "unstrided" => {
            let mut model = typed()?.into_decluttered()?;
            let rewritten = unstride_depthwise(&mut model)?;
            anyhow::ensure!(
                rewritten == 4,
                "expected 4 stride-2 depthwise layers, found {rewritten}"
            );
            model.optimize()?;
            model.into_runnable()?
        }
        // NOT the network: the ReLU6 after each depthwise convolution removed, so the timing
        // shows the most that fusing it into the depthwise kernel could save.
        "no-dw-relu6" => {
            let mut model = typed()?.into_decluttered()?;
            let removed = remove_relu6_after_depthwise(&mut model)?;
            anyhow::ensure!(
                removed == 17 * 2,
                "expected 17 Max+Min pairs, removed {removed} ops"
            );
            model.optimize()?;
            model.into_runnable()?
        }
        // The ONNX decluttered then codegen only (what "unstrided" is without the rewrite).
        "decluttered" => {
            let mut model = typed()?.into_decluttered()?;
            model.optimize()?;
            model.into_runnable()?
        }
        // The shipped NNEF read with tract's core registry only (no ONNX extension).
        "shipped-core" => {
            let mut model =
                tract_nnef::nnef().model_for_read(&mut Cursor::new(vision::BUNDLED_NNEF))?;
            model.optimize()?;
            model.into_runnable()?
        }
        // The shipped NNEF, decluttered again before codegen.
        "nnef-declutter" => nnef()?.into_optimized()?.into_runnable()?,
        // The shipped NNEF with tract's channels-last rewrite applied at load.
        "shipped-nhwc" => {
            let mut model = channels_last(nnef()?)?;
            model.optimize()?;
            model.into_runnable()?
        }
        // The shipped NNEF, channels-last at load, decluttered again, codegen. (Writing the
        // channels-last model as NNEF fails in tract 0.23.9: "Translating model to proto_model".)
        "shipped-nhwc-declutter" => channels_last(nnef()?)?.into_optimized()?.into_runnable()?,
        // tract's channels-last rewrite of every convolution.
        "nhwc" => channels_last(typed()?)?.into_optimized()?.into_runnable()?,
        // Where the load time goes, stage by stage (printed to stderr).
        "split" => split_load()?,
        other => {
            anyhow::bail!(
                "unknown variant {other}: shipped, shipped-core, onnx, decluttered, unstrided, no-dw-relu6, nnef-declutter, shipped-nhwc, shipped-nhwc-declutter, nhwc or split"
            )
        }
    };
    Ok(plan)
}

/// Where the load time goes, stage by stage (printed to stderr), for the ONNX and the NNEF.
fn split_load() -> Result<Arc<TypedRunnableModel>> {
    let started = Instant::now();
    let proto = tract_onnx::onnx().proto_model_for_read(&mut Cursor::new(vision::BUNDLED_MODEL))?;
    let parsed = ms(started.elapsed());
    let model = tract_onnx::onnx()
        .model_for_proto_model(&proto)?
        .with_input_fact(0, f32::fact([1, 3, 224, 224]).into())?
        .with_outputs_by_name(["features", "logits"])?
        .into_typed()?;
    let typed_at = ms(started.elapsed());
    let mut model = model.into_decluttered()?;
    let decluttered = ms(started.elapsed());
    model.optimize()?;
    eprintln!(
        "onnx: protobuf {parsed:.1} ms, to typed {:.1} ms, declutter {:.1} ms, codegen {:.1} ms",
        typed_at - parsed,
        decluttered - typed_at,
        ms(started.elapsed()) - decluttered
    );
    let started = Instant::now();
    let core_only = tract_nnef::nnef();
    let core_ms = ms(started.elapsed());
    drop(core_only);
    let started = Instant::now();
    let framework = tract_nnef::nnef().with_onnx();
    let registries = ms(started.elapsed());
    eprintln!("nnef framework: core registry {core_ms:.1} ms, with onnx {registries:.1} ms");
    let proto = framework.proto_model_for_read(&mut Cursor::new(vision::BUNDLED_NNEF))?;
    let parsed = ms(started.elapsed());
    let mut model = framework.model_for_proto_model(&proto)?;
    let read = ms(started.elapsed());
    model.optimize()?;
    eprintln!(
        "nnef: read {read:.1} ms (framework {registries:.1}, tar + graph + tensors {:.1}, typed model {:.1}), codegen {:.1} ms",
        parsed - registries,
        read - parsed,
        ms(started.elapsed()) - read
    );
    model.into_runnable()
}

/// Experiment (not adopted, see docs/performance.md): every stride-2 depthwise convolution as
/// a stride-1 one followed by keeping every other row and column, so tract's vectorised
/// stride-1 kernel runs it. Exact for explicit padding: a stride-1 output of length `L`
/// subsampled from 0 has `ceil(L / 2)` values, and value `2i` is the stride-2 output's `i`.
/// Only codegen may follow: decluttering folds the subsampling back into the convolution.
fn unstride_depthwise(model: &mut TypedModel) -> Result<usize> {
    use tract_onnx::tract_core::ops::Downsample;
    use tract_onnx::tract_core::ops::cnn::{Conv, PaddingSpec};

    let is_strided_depthwise = |conv: &Conv| {
        let spec = &conv.pool_spec;
        conv.q_params.is_none()
            && conv.group > 1
            && conv.group == spec.input_channels
            && conv.group == spec.output_channels
            && spec.strides().iter().all(|&s| s == 2)
            && spec.dilations().iter().all(|&d| d == 1)
            && matches!(spec.padding, PaddingSpec::Explicit(..))
    };
    let candidates: Vec<usize> = model
        .eval_order()?
        .into_iter()
        .filter(|&id| {
            model
                .node(id)
                .op_as::<Conv>()
                .is_some_and(is_strided_depthwise)
        })
        .collect();
    for &id in &candidates {
        let node = model.node(id).clone();
        let conv = node.op_as::<Conv>().context("a convolution")?;
        let input_fact = model.outlet_fact(node.inputs[0])?.clone();
        let first_spatial_axis = conv
            .pool_spec
            .data_format
            .shape(input_fact.shape.to_tvec())?
            .h_axis();
        let mut unstrided = conv.clone();
        unstrided.pool_spec.strides = None;
        let mut patch = TypedModelPatch::new(format!("unstride {}", node.name));
        let taps = patch.taps(model, &node.inputs)?;
        let mut wire = patch.wire_node(&*node.name, unstrided, &taps)?[0];
        for spatial in 0..conv.pool_spec.rank() {
            wire = patch.wire_node(
                format!("{}.subsample.{spatial}", node.name),
                Downsample::new(first_spatial_axis + spatial, 2, 0),
                &[wire],
            )?[0];
        }
        patch.shunt_outside(model, OutletId::new(id, 0), wire)?;
        patch.apply(model)?;
    }
    model.compact()?;
    Ok(candidates.len())
}

/// Experiment (wrong on purpose): removes the `Max` and `Min` that follow each depthwise
/// convolution (ReLU6 as decluttered), for an upper bound on what fusing them would save.
fn remove_relu6_after_depthwise(model: &mut TypedModel) -> Result<usize> {
    use tract_onnx::tract_core::ops::cnn::Conv;

    let mut doomed = Vec::new();
    for id in model.eval_order()? {
        let is_depthwise = model
            .node(id)
            .op_as::<Conv>()
            .is_some_and(|conv| conv.group > 1);
        if !is_depthwise {
            continue;
        }
        let mut current = id;
        for wanted in ["Max", "Min"] {
            let successors = &model.node(current).outputs[0].successors;
            let [next] = successors.as_slice() else { break };
            if model.node(next.node).op.name() != wanted {
                break;
            }
            doomed.push(next.node);
            current = next.node;
        }
    }
    for &id in &doomed {
        let node = model.node(id).clone();
        let data = node
            .inputs
            .iter()
            .find(|&&input| model.outlet_fact(input).is_ok_and(|f| f.konst.is_none()))
            .copied()
            .context("a non-constant input")?;
        TypedModelPatch::rewire(model, &[data], &[id.into()], &|_, xs| Ok(xs.into()))?
            .apply(model)?;
    }
    model.compact()?;
    Ok(doomed.len())
}

fn compare(variants: &str, tensor: &[f32], runs: usize) -> Result<()> {
    let input = Tensor::from_shape(&[1, 3, 224, 224], tensor)?.into_tvalue();
    let mut states = Vec::new();
    for variant in variants.split(',') {
        let started = Instant::now();
        let plan = build(variant)?;
        let load = ms(started.elapsed());
        let mut state = plan.spawn()?;
        let outputs = state.run(tvec![input.clone()])?;
        let logits: Vec<f32> = outputs[1]
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect();
        for _ in 0..10 {
            state.run(tvec![input.clone()])?;
        }
        states.push((variant, load, state, Vec::with_capacity(runs), logits));
    }
    for _ in 0..runs {
        for (_, _, state, times, _) in states.iter_mut() {
            let started = Instant::now();
            state.run(tvec![input.clone()])?;
            times.push(started.elapsed());
        }
    }
    let reference = states[0].4.clone();
    for (variant, load, _, mut times, logits) in states {
        times.sort();
        let max_diff = logits
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!(
            "{variant:<10} load {load:7.1} ms  min {:6.2}  median {:6.2}  p90 {:6.2} ms  max |Δlogit| vs first {max_diff:.1e}",
            ms(times[0]),
            ms(times[times.len() / 2]),
            ms(times[times.len() * 9 / 10])
        );
    }
    Ok(())
}

fn default_tensor() -> Result<Vec<f32>> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/vision/tests/data/chelsea.jpg");
    let bytes = std::fs::read(&path)?;
    let pre = vision::Preprocessor::new(224)?;
    let decoded = vision::decode(
        &bytes,
        &vision::DecodeLimits::default(),
        pre.resize_short_side(),
    )?;
    Ok(pre.tensor(&decoded.pixels)?)
}

fn profile(plan: &Arc<TypedRunnableModel>, input: TValue, iterations: u32) -> Result<()> {
    let mut state = plan.spawn()?;
    let mut per_node: HashMap<usize, Duration> = HashMap::new();
    for _ in 0..iterations {
        state.run_plan_with_eval(tvec![input.clone()], |session, op_state, node, inputs| {
            let started = Instant::now();
            let result = tract_onnx::tract_core::plan::eval(session, op_state, node, inputs);
            *per_node.entry(node.id).or_default() += started.elapsed();
            result
        })?;
    }
    let model = plan.model();
    let mut by_op: HashMap<String, (Duration, usize)> = HashMap::new();
    for (id, time) in &per_node {
        let entry = by_op
            .entry(model.node(*id).op.name().to_string())
            .or_default();
        entry.0 += *time / iterations;
        entry.1 += 1;
    }
    let mut by_op: Vec<_> = by_op.into_iter().collect();
    by_op.sort_by_key(|entry| std::cmp::Reverse(entry.1.0));
    for (op, (time, count)) in by_op {
        eprintln!("{:>8.3} ms  {count:>3}×  {op}", ms(time));
    }
    let mut rows: Vec<_> = per_node.into_iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1));
    for (id, time) in rows.iter().take(15) {
        let node = model.node(*id);
        eprintln!(
            "{:>8.3} ms  {:<18} {:<40} {:?}",
            ms(*time / iterations),
            node.op.name(),
            node.name,
            node.op.info()?
        );
    }
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
