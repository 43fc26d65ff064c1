"""initialize() fails: the model must be UNAVAILABLE with the traceback as its reason."""


class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("cannot initialize: missing weights")

    def execute(self, requests):
        return []
