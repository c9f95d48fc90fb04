from compressor.training.loop import fit
from compressor.training.params import TrainParams
from compressor.training.terms import Step, Term

__all__ = ["fit", "TrainParams", "Step", "Term"]
