"""Domain errors use cases raise; HTTP turns them into 4xx, consumers dead-letter them."""


class DomainError(Exception):
    """A request or event that the business rules refuse; ``status`` is the HTTP answer."""

    status = 422

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    status = 404


class Conflict(DomainError):
    status = 409


class Invalid(DomainError):
    status = 422


class Problems(Invalid):
    """Several fields refused at once (a rule book, a batch of quotas): each named with why."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{where}: {why}" for where, why in problems))
