"""Regenerate he2016-degradation.png: python docs/experiments/he2016-degradation.py [DIR]
(DIR: a lab directory holding the full run; it is run there first when missing)."""
import sys
from pathlib import Path

from gradwell.cli import main
import gradwell.lab.catalog.he2016_degradation as exp

if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "gradwell-lab/he2016-degradation")
    main(["lab", "run", "he2016-degradation", "--out", str(out), "--no-progress"])
    print(exp.plot(out, Path(__file__).with_suffix(".png")))
