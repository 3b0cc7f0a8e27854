"""The one label table of prompt points, shared by every promptable family.

0 background click, 1 foreground click, 2 box top-left, 3 box bottom-right,
4 padding ("not a point"). TAP's reference uses these numbers; SAM's own set is the
same five roles (with -1 for padding), so one table serves both."""

BACKGROUND, FOREGROUND, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT, PADDING = 0, 1, 2, 3, 4
