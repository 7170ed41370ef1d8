"""The errors dfd_kit raises. Each message says what went wrong and what to do."""


class DFDError(Exception):
    """Base class of every error raised by dfd_kit."""


class SketchError(DFDError, ValueError):
    """The sketch could not be read or is not usable (missing, corrupt, NaN, wrong shape)."""


class DrawingFileError(SketchError):
    """A saved drawing (the drawing pad's JSON file) could not be read: not JSON, not a
    dfd_kit drawing, another format version, or missing or malformed entries."""


class DrawingModelWarning(UserWarning):
    """A saved drawing was made with another model (other name or Params hash) than the
    one it is loaded into: its face will not be reproduced exactly."""


class ParamsError(DFDError, FileNotFoundError):
    """A Params/ folder is missing files or holds checkpoints that do not fit the model."""


class ConfigError(DFDError, ValueError):
    """An argument is out of range (component weight, K, sex, component name)."""


class DataError(DFDError, ValueError):
    """A data set for training or measuring (photo folder, sex table, samples.csv) is malformed."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data set's folder, its samples.csv or an image that it lists is missing."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training was stopped by Ctrl-C (or a notebook's interrupt) after the step under way
    finished and a checkpoint was saved; running the same training again resumes there.
    A KeyboardInterrupt, so code that stops on Ctrl-C still stops."""
