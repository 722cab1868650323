"""How to sample: the generation settings a workdir's `sample` config section holds, overridden per run.

The one mapping from the config's `sample` section to `VideoSampler.generate` arguments, shared by
`vdit.sample`, the evaluator, the modes judge and the trainer's periodic samples.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class SampleOptions:
  steps: int
  cfg: float
  sampler: str = "euler"
  shift: float = 0.0  # 0: from the token count
  negative_prompt: str = ""
  guidance_interval: tuple = (0.0, 1.0)  # guidance only at times t in [low, high]
  frame_cfg: float | None = None  # separate guidance for conditioning frames (None: off)
  cache: str = "none"  # none | cfg | block (vdit/diffusion/caching.py)

  @classmethod
  def from_section(cls, sample, **overrides) -> "SampleOptions":
    """The config's `sample` section, with `overrides` that are not None taking precedence."""
    values = dict(steps=sample.steps, cfg=sample.cfg, sampler=sample.sampler, shift=sample.shift,
                  negative_prompt=sample.negative_prompt, cache=sample.cache,
                  frame_cfg=float(sample.frame_cfg) or None,
                  guidance_interval=tuple(float(v) for v in sample.guidance_interval))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)

  def generate_kwargs(self) -> dict:
    """Keyword arguments of VideoSampler.generate."""
    return dataclasses.asdict(self)
