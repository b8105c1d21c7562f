from tests.training.conftest import api, make_token, provider

__all__ = ["api", "make_token", "provider"]
