# Read the config files strictly before Snakemake loads them: a YAML error names its line and
# column (Snakemake's own loader says only "not valid JSON or YAML"), and a key given twice is
# refused with both lines (YAML would keep the last one silently). Snakemake only, no heavy imports.

import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))

from trtflow.core.config import read_yaml  # noqa: E402
from trtflow.core.errors import TrtflowError  # noqa: E402


def config_files():
    """The config files Snakemake merges, in order: config.yaml, then each --configfile
    (relative to the working directory where they are under it)."""
    files = [*workflow.overwrite_configfiles]
    if Path("config.yaml").exists():
        files.insert(0, "config.yaml")
    here = Path.cwd().resolve()
    out = []
    for f in files:
        p = Path(f).resolve()
        out.append(str(p.relative_to(here)) if p.is_relative_to(here) else str(f))
    return out


def check_config_files():
    for path in config_files():
        try:
            read_yaml(path)
        except TrtflowError as exc:
            raise WorkflowError(str(exc)) from None


check_config_files()
