"""`python -m experiments.inspect run_id=...`: build a logged run's inspection.html and log it into that run."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from experiments.cli import or_exit
from masksae.config import CONF_DIR
from masksae.errors import ConfigError
from masksae.evals.validate import validate_eval_config
from masksae.export import load_sae
from masksae.inspection import write_inspection
from masksae.resources import shared_model
from masksae.tracking import REPO_ROOT, tracking_uri

LETTERS_ARTIFACT = "evals/absorption_per_letter.json"


def inspect_run(cfg: DictConfig) -> Path:
    """Download the run's config, SAE and absorption table, write the page, log it as `inspection.html`; returns its path."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    run_id = cfg.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        raise ConfigError("run_id", run_id, "the id of an MLflow run that trained an SAE (quote ids that look like numbers)")
    validate_eval_config(cfg.eval)
    client = MlflowClient(tracking_uri=tracking_uri(cfg.tracking.get("uri")))
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        raise ConfigError("run_id", run_id, f"an MLflow run at {tracking_uri(cfg.tracking.get('uri'))} ({error.message})") from None
    logged = {artifact.path for artifact in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "evals")}
    if not {"config.yaml", "sae"} <= logged:
        raise ConfigError("run_id", run_id, "a run that logged config.yaml and sae/ (a finished training run)")
    with tempfile.TemporaryDirectory() as scratch:
        train_cfg = OmegaConf.merge(OmegaConf.load(client.download_artifacts(run_id, "config.yaml", scratch)),
                                    {"eval": cfg.eval, "paths": cfg.paths})
        sae, _ = load_sae(client.download_artifacts(run_id, "sae", scratch))
        letters = json.loads(Path(client.download_artifacts(run_id, LETTERS_ARTIFACT, scratch)).read_text()) if LETTERS_ARTIFACT in logged else None
        page = write_inspection(train_cfg, shared_model(train_cfg), sae, letters, Path(scratch) / "inspection.html",
                                run.data.tags.get("run_key", run_id))
        client.log_artifact(run_id, str(page))
        out = Path(cfg.out) if cfg.get("out") else REPO_ROOT / "outputs" / "inspection" / f"{run_id}.html"
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copyfile(page, out))


@hydra.main(config_path=CONF_DIR, config_name="inspect", version_base="1.3")
def main(cfg: DictConfig) -> None:
    path = or_exit(lambda: inspect_run(cfg))
    print(f"[masksae] inspection page: {path} (logged to run {cfg.run_id} as inspection.html)")


if __name__ == "__main__":
    main()
