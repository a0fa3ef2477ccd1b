"""Regenerate pascanu2013-clipping.png: python docs/experiments/pascanu2013-clipping.py [DIR]
(DIR: a lab directory holding the full run; it is run there first when missing)."""
import sys
from pathlib import Path

from gradwell.cli import main
import gradwell.lab.catalog.pascanu2013_clipping as exp

if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "gradwell-lab/pascanu2013-clipping")
    main(["lab", "run", "pascanu2013-clipping", "--out", str(out), "--no-progress"])
    print(exp.plot(out, Path(__file__).with_suffix(".png")))
