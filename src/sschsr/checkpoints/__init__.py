"""One home for weights files: every kind of weights the package reads or writes, and nothing else.

- :mod:`~sschsr.checkpoints.spec`: a network described by a *spec*, ``{"_target_": "sschsr.models....Class",
  **constructor arguments}``, nested for networks built from networks (SSCHSR holds its flow network and
  WarpNet), made by :func:`module_spec` from the built network and rebuilt by :func:`build_module` (only the
  network classes of :data:`~sschsr.checkpoints.spec.NETWORKS`, by exact name, with plain bounded arguments,
  at most :data:`~sschsr.checkpoints.spec.MAX_PARAMETERS` parameters: a file cannot name code to run nor ask
  for a network beyond reason). The spec, the scale the model was trained for, its band count and the camera
  response ``rgb_hsi`` was rendered with form the *model info*, validated by :func:`check_model_info` before
  anything in it is used (the camera by name only, parts beside the file only).
- :mod:`~sschsr.checkpoints.files`: reading and writing the files. The model info lives in a Lightning
  ``.ckpt`` of :class:`sschsr.lit.sr.SRModule` under :data:`MODEL_KEY` (written by the module at every save),
  with the weights under ``net.``; in a ``.safetensors`` file's own metadata under :data:`MODEL_KEY` as JSON
  (written by :func:`save_model` / :func:`export_weights`), rebuilt without Hydra. A JSON sidecar of the same
  stem (``m.safetensors`` + ``m.json``) is read for files whose metadata lacks it. Children of the network may
  be stored as *parts*, files of their own beside it named by a hash of their weights
  (``flow_net-<hash>.safetensors``), listed with that hash in the model info and checked at load: models
  that share a part share its file. Checkpoints are read by :func:`load_checkpoint` alone,
  with ``weights_only=True`` passed explicitly (no environment setting turns it off).
- :mod:`~sschsr.checkpoints.model`: the full model: :func:`load_model` (any model file, or the shipped
  weights, for inference; always a float32 network on the CPU), :func:`save_model`, :func:`export_weights`
  (float16: half the size), :func:`load_init_weights` (fine-tuning from a trained model).
- :mod:`~sschsr.checkpoints.stages`: the earlier stages: the flow network (stage 1) and WarpNet (stage 2)
  saved and loaded with their constructor arguments (:func:`load_flow_net`, :func:`load_warpnet`), and
  loaded into a later stage's network (:func:`load_earlier_stages`).

The weights the package ships live in ``src/sschsr/weights/sschsr_x{s}.safetensors`` (31 bands, x4 and x8)
with their parts (a flow network and a WarpNet each), made from trained checkpoints by
``experiments/export_weights.py``.

Layer: above :mod:`sschsr.models`, below :mod:`sschsr.inference`, :mod:`sschsr.lit` and the command lines.
"""

from sschsr.checkpoints.files import load_checkpoint, load_net, read_weights, save_net, state_sha256
from sschsr.checkpoints.model import (
    SHIPPED_NAMES,
    WEIGHTS_DIR,
    AlignmentStages,
    export_weights,
    load_alignment_stages,
    load_init_weights,
    load_model,
    missing_weights_message,
    read_training_checkpoint,
    save_model,
    shipped_weights,
    widen_inputs,
)
from sschsr.checkpoints.spec import (
    DEFAULT_CAMERA,
    MAX_BANDS,
    MAX_PARAMETERS,
    MODEL_KEY,
    NETWORKS,
    PART_KEY,
    SUPPORTED_SCALES,
    build_module,
    check_model_info,
    check_scale,
    model_info,
    module_spec,
    spec_matches,
    trained_scales,
)
from sschsr.checkpoints.stages import (
    load_earlier_stages,
    load_flow_net,
    load_flow_weights,
    load_stage2,
    load_warpnet,
    save_flow_net,
    save_warpnet,
)

__all__ = [
    "AlignmentStages",
    "load_alignment_stages",
    "DEFAULT_CAMERA",
    "MAX_BANDS",
    "MAX_PARAMETERS",
    "MODEL_KEY",
    "NETWORKS",
    "PART_KEY",
    "SHIPPED_NAMES",
    "SUPPORTED_SCALES",
    "WEIGHTS_DIR",
    "build_module",
    "check_model_info",
    "check_scale",
    "export_weights",
    "load_earlier_stages",
    "load_flow_net",
    "load_flow_weights",
    "load_checkpoint",
    "load_init_weights",
    "load_model",
    "load_net",
    "load_stage2",
    "load_warpnet",
    "missing_weights_message",
    "model_info",
    "module_spec",
    "read_training_checkpoint",
    "read_weights",
    "save_flow_net",
    "save_model",
    "save_net",
    "save_warpnet",
    "shipped_weights",
    "spec_matches",
    "state_sha256",
    "trained_scales",
    "widen_inputs",
]
