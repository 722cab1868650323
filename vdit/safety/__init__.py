"""Safety stages of sampling: the policy file (policy), prompt checks before any compute (text_match
terms, external classifier commands: prompt_check), frame classifiers over conditioning inputs and
every generated video before it is written (frame_check; NudeNet as the optional `safety` extra:
nudenet_frames; concept prompts against a CLIP model given by path: clip_frames, clip_model,
clip_weights, clip_tokenizer), and the decisions recorded in index.jsonl (decision).
"""
