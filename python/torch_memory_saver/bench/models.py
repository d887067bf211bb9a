"""Model weight layouts for the cycles part: the parameter shapes of a transformers config, no weights downloaded.

A model layout allocates one bf16 tensor per entry of ``named_parameters()``
in that order, inside the region: the allocations torch's caching allocator
(and so the engine) sees when such a model is materialized on the GPU. The
shapes come from the model class built on the meta device (no memory, no
download); transformers is needed, and a missing transformers makes the layout
skipped, not failed.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Dict, List, Optional, Tuple

# name -> (transformers config class, its arguments). llama-1b: the shapes of Llama 3.2 1B (tied embeddings).
MODELS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "llama-1b": ("LlamaConfig", {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                                 "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                                 "tie_word_embeddings": True}),
}


def unavailable(name: str) -> Optional[str]:
    """Why the layout `name` cannot be built here (None when it can)."""
    if name not in MODELS:
        return f"unknown model layout {name!r} (known: {', '.join(MODELS)})"
    if importlib.util.find_spec("transformers") is None:
        return "transformers is not installed (pip install transformers)"
    return None


def parameter_shapes(torch: Any, name: str) -> List[Tuple[str, List[int]]]:
    """(parameter name, shape) of the model `name`, in named_parameters() order (tied weights once)."""
    import transformers

    config_class, arguments = MODELS[name]
    config = getattr(transformers, config_class)(**arguments)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return [(parameter_name, list(parameter.shape)) for parameter_name, parameter in model.named_parameters()]
