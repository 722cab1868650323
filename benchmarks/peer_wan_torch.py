"""The PyTorch peer of benchmarks/scale.py: a diffusers WanTransformer3DModel train step, as JSON.

  python benchmarks/peer_wan_torch.py --spec='{"device": "cuda", "dtype": "bfloat16", ...}'

One step = forward + MSE velocity loss + backward + global-norm clipping + AdamW + EMA, the work
of vdit's train step minus its text encoder (the peer takes text embeddings as input). Parameters
are float32; "bfloat16" runs the model under autocast (mixed precision, as vdit's bf16 compute).
Attention is diffusers' default backend (torch SDPA: flash attention for bf16 on recent GPUs).
benchmarks/scale.py runs this in a subprocess, before JAX takes the accelerator's memory.
Prints one JSON object; {"available": false, "reason": ...} when torch or diffusers is missing.
"""
import argparse
import contextlib
import json
import time

# Keys of a spec (benchmarks/scale.py builds it from the same shape as its vdit model).
SPEC_KEYS = ("device", "dtype", "compile", "gradient_checkpointing", "num_heads", "head_dim", "ffn_dim",
             "num_layers", "in_channels", "text_dim", "text_length", "latent", "batch", "steps")


def run(spec: dict) -> dict:
  """Times the peer's train step on `spec`; returns seconds per step and what ran."""
  missing = set(SPEC_KEYS) - set(spec)
  if missing:
    raise ValueError(f"Peer spec lacks {sorted(missing)}.")
  try:
    import torch
    import diffusers
    from diffusers import WanTransformer3DModel
  except Exception as e:  # ImportError, or a broken install that fails while importing
    return {"available": False, "reason": f"torch/diffusers not importable: {type(e).__name__}: {e}"}
  device = spec["device"]
  if device == "cuda" and not torch.cuda.is_available():
    return {"available": False, "reason": "torch sees no CUDA device (CPU-only torch build?)."}
  torch.manual_seed(0)
  model = WanTransformer3DModel(
      patch_size=(1, 2, 2), num_attention_heads=spec["num_heads"], attention_head_dim=spec["head_dim"],
      in_channels=spec["in_channels"], out_channels=spec["in_channels"], text_dim=spec["text_dim"],
      ffn_dim=spec["ffn_dim"], num_layers=spec["num_layers"]).to(device)
  if spec["gradient_checkpointing"]:
    model.enable_gradient_checkpointing()
  model.train()
  params = [p for p in model.parameters() if p.requires_grad]
  ema = [p.detach().clone() for p in params]
  optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.01,
                                fused=device == "cuda")
  compiled = "none"
  if spec["compile"]:
    if hasattr(model, "compile_repeated_blocks"):  # regional: each block compiled once, reused
      model.compile_repeated_blocks(fullgraph=True)
      compiled = "compile_repeated_blocks(fullgraph=True)"
    else:
      model = torch.compile(model)
      compiled = "torch.compile(model)"
  autocast = (torch.autocast(device_type=device, dtype=torch.bfloat16) if spec["dtype"] == "bfloat16"
              else contextlib.nullcontext())

  b, c = spec["batch"], spec["in_channels"]
  t, h, w = spec["latent"]
  x0 = torch.randn(b, c, t, h, w, device=device)
  noise = torch.randn_like(x0)
  context = torch.randn(b, spec["text_length"], spec["text_dim"], device=device)
  times = torch.rand(b, device=device)

  def step():
    s = times.view(b, 1, 1, 1, 1)
    x_t = (1 - s) * x0 + s * noise
    with autocast:
      out = model(x_t, times * 1000, context, return_dict=False)[0]
    loss = torch.nn.functional.mse_loss(out.float(), noise - x0)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
      torch._foreach_lerp_(ema, params, 1 - 0.999)
    return loss

  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  start = time.perf_counter()
  loss = step()  # compiles with torch.compile
  sync()
  first_step_s = time.perf_counter() - start
  step()
  sync()
  start = time.perf_counter()
  for _ in range(spec["steps"]):
    loss = step()
  sync()
  step_s = (time.perf_counter() - start) / spec["steps"]
  out = {"available": True, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
         "torch": torch.__version__, "diffusers": diffusers.__version__, "dtype": spec["dtype"],
         "params": sum(p.numel() for p in params), "compile": compiled,
         "gradient_checkpointing": spec["gradient_checkpointing"], "attention": "diffusers native (torch SDPA)",
         "first_step_s": round(first_step_s, 3), "step_s": round(step_s, 4), "steps_timed": spec["steps"],
         "loss": round(float(loss), 4)}
  if device == "cuda":
    out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
  else:
    out["threads"] = torch.get_num_threads()
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--spec", required=True, help=f"JSON object with keys {', '.join(SPEC_KEYS)}.")
  args = parser.parse_args()
  print(json.dumps(run(json.loads(args.spec))))


if __name__ == "__main__":
  main()
