"""Training: TAPO (DAPO adapted to tool calls) on TRL's GRPOTrainer, with rollouts from agent_runtime."""

import logging
import os

# rollout_func is the TRL path we build on (TRL pinned); its "experimental" warning is noise to users.
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def configure_logging(log: logging.Logger, *, verbose: bool) -> None:
    """What the training commands print: their own INFO lines always, everything at INFO with
    ``verbose``; otherwise warnings only, without transformers' loading bars and deprecation noise
    (the training progress display stays)."""
    import warnings

    from transformers.utils import logging as hf_logging

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    if not verbose:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
