"""What people look at: overlays and colour maps, the offline HTML gallery, token colouring."""

from inputiba.report.gallery import (
    THUMB_KINDS,
    render_gallery,
    thumb_path,
    write_gallery,
    write_thumbnails,
)

__all__ = ["THUMB_KINDS", "render_gallery", "thumb_path", "write_gallery", "write_thumbnails"]
