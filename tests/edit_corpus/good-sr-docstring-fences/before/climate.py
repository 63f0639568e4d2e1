"""Temperature helpers for the greenhouse controller.

Usage:

```python
from climate import to_fahrenheit
to_fahrenheit(21.0)
```

Readings are logged as a table:

```
sensor  celsius
north   21.5
```
"""

from __future__ import annotations

LOG_TEMPLATE = """\
# Readings

```
{rows}
```
"""


def to_fahrenheit(celsius: float) -> float:
    """Celsius to Fahrenheit.

    ```python
    >>> to_fahrenheit(100.0)
    212.0
    ```
    """
    return celsius * 9 / 5 + 32


def to_celsius(fahrenheit: float) -> float:
    """Fahrenheit to Celsius.

    ```
    >>> to_celsius(212.0)
    100.0
    ```
    """
    return (fahrenheit - 32) * 5 / 9


def too_hot(celsius: float, limit: float = 30.0) -> bool:
    """Whether a reading is above the limit.

    ```python
    >>> too_hot(31.0)
    True
    ```
    """
    return celsius >= limit
