from compressor.training.evaluation import evaluate
from compressor.training.loop import fit
from compressor.training.params import TrainParams
from compressor.training.terms import Step, Term

__all__ = ["evaluate", "fit", "TrainParams", "Step", "Term"]
