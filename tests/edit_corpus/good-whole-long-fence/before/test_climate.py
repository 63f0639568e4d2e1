from climate import too_hot


def test_limit_is_not_too_hot():
    assert not too_hot(30.0)
