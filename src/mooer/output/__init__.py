"""Result files: text / tsv / jsonl (``formats``) and subtitles (``subtitles``)."""
