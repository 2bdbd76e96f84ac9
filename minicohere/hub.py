"""Fetching files from the Hugging Face hub: one attempt, and one line that says what to do if it fails.

`snapshot_download` asks the hub once and falls back to the local cache (hf_hub_download would retry an
unreachable hub with back-off, about 23 s offline). The tokenizer and the checkpoint loader both come
through here, so a learner on a train gets the same kind of answer from either.
"""

from __future__ import annotations

import os
from pathlib import Path


def download(repo_id: str, allow_patterns: list[str], what: str, local_way: str, error: type = OSError,
             revision: str | None = None, token: str | None = None) -> Path:
    """The local folder holding `repo_id`'s files that match `allow_patterns`.

    `what` names the files in messages ("its tokenizer"), `local_way` the way round the hub ("a local
    checkpoint folder"); every failure raises `error` with one line naming the repo id.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = repo_id + (f" (revision {revision})" if revision else "")
    try:
        return Path(snapshot_download(repo_id, revision=revision, token=token, allow_patterns=allow_patterns))
    except GatedRepoError:
        raise error(f"{where} is gated on the Hugging Face hub: accept its licence on the model page, then pass "
                    "token=... (or log in with `hf auth login`)") from None
    except RevisionNotFoundError:
        raise error(f"{where}: the hub has no such revision") from None
    except RepositoryNotFoundError:
        raise error(f"{where}: no such repository on the Hugging Face hub (or it is private: pass token=...)") from None
    except LocalEntryNotFoundError:
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") else ""
        raise error(f"{where}: the hub cannot be reached{offline} and {what} is not in the local cache; connect "
                    f"and retry (a gated model also needs a token), or pass {local_way}") from None
    except HfHubHTTPError as e:
        raise error(f"{where}: the hub refused the download: {(str(e).splitlines() or [''])[0]}") from None
    except Exception as e:  # the connection dropped or a proxy interfered: the network library's own errors
        raise error(f"{where}: downloading {what} from the Hugging Face hub failed ({type(e).__name__}: "
                    f"{(str(e).splitlines() or [''])[0]}); check the network and retry, or pass {local_way}") from None
