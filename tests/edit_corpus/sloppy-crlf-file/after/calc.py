def add(a, b):
    # plain addition
    return a + b


def sub(a, b):
    return a - b


def mul(a, b):
    return a * b
