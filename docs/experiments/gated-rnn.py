"""Regenerate gated-rnn.png: python docs/experiments/gated-rnn.py [DIR]
(DIR: a lab directory holding the full run; it is run there first when missing)."""
import sys
from pathlib import Path

from gradwell.cli import main
import gradwell.lab.catalog.gated_rnn as exp

if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "gradwell-lab/gated-rnn")
    main(["lab", "run", "gated-rnn", "--out", str(out), "--no-progress"])
    print(exp.plot(out, Path(__file__).with_suffix(".png")))
