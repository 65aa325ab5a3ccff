"""Errors a target raises; the dispatcher steers retries by their class.

| class              | the dispatcher                                              |
| ------------------ | ----------------------------------------------------------- |
| TransientError     | retries the batch later (backoff, at least `retry_after`)   |
| PermanentError     | dead-letters the batch with the message                     |
| PartialFailure     | dead-letters the named mutations, marks the rest delivered  |
| PayloadTooLarge    | splits the batch in halves and delivers each                |
| AudienceGone       | forgets the platform id, recreates the audience, redelivers |
| CredentialsRefused | holds the account's work (no attempt counted, nothing      |
|                    | dead-lettered) and tries one call after a cooldown          |
| VersionRetired     | the same (a kind of CredentialsRefused)                     |

Messages are shown to operators (and, for audience creation, to the marketer in the DMP):
they say what the platform answered and never contain a credential or a request body.
"""


class TargetError(Exception):
    """Base class of everything a target raises about a delivery."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class TransientError(TargetError):
    """The platform may accept the same call later (timeout, 429, 5xx, connection refused)."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(TargetError):
    """The platform refused the call and repeating it cannot help (a 4xx, a 410)."""


class AudienceGone(PermanentError):
    """The platform no longer knows the audience's id (deleted there): create it again."""


class CredentialsRefused(TargetError):
    """The platform refused our own credentials or signature (HTTP 401, 403): the account is
    unusable until someone fixes its configuration, and nothing is wrong with the data. Neither
    transient (retrying each batch would burn its attempts) nor permanent (dead-lettering would
    blame the mutations): the dispatcher holds all of the account's work until a trial call passes."""


class VersionRetired(CredentialsRefused):
    """The platform no longer serves the API version we call (Criteo's 410 after a version's
    sunset). Our configuration, not the data: held like refused credentials until the version
    setting names one the platform serves."""


class PayloadTooLarge(TargetError):
    """The platform refused the batch as too large (HTTP 413); smaller batches may pass."""


class PartialFailure(TargetError):
    """Some mutations of a batch failed for good; every other one was accepted.

    `failed` maps the `Mutation.id` of each refused mutation to the platform's reason.
    """

    def __init__(self, message, failed):
        super().__init__(message)
        self.failed = dict(failed)


class TargetConfigError(ValueError):
    """A target setting is missing or wrong; `key` names it (e.g. `url`, without `target.`)."""

    def __init__(self, key, message):
        super().__init__(f"target.{key}: {message}")
        self.key = key
