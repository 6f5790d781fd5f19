"""The dashboards' building blocks: one look for every panel, variables, and the board.

Every panel of both dashboards is a time series or a stat with the same legend,
tooltip and colours, on the dashboard's Prometheus data source variable; these
helpers say so once. `Board` numbers panels and lays them out left to right,
starting a new line when a panel does not fit the 24-column grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

#: Panels query the data source the `datasource` variable picks.
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
#: The tag both dashboards carry; each links to the others by it.
TAG = "dsgd"
GRID_COLUMNS = 24


@dataclass(frozen=True)
class Target:
    """One query of a panel: PromQL and the legend of its series."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Look:
    """What differs between panels beyond their queries."""

    unit: str = "short"
    decimals: int | None = None
    min: float | None = None
    max: float | None = None


PERCENT_UNIT = Look(unit="percentunit", min=0, max=1)
_Panel = TypeVar("_Panel", timeseries.Panel, stat.Panel)


def _queries(targets: list[Target]) -> list[prometheus.Dataquery]:
    return [
        prometheus.Dataquery()
        .ref_id(chr(ord("A") + index))
        .datasource(DATASOURCE)
        .expr(target.expr)
        .legend_format(target.legend)
        .range()
        for index, target in enumerate(targets)
    ]


def time_series(
    title: str, description: str, targets: list[Target], look: Look = Look()
) -> timeseries.Panel:
    """Lines, one per series, with a table legend of last values."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_queries(targets))
        .unit(look.unit)
        .color_scheme(dashboard_builders.FieldColor().mode(model.FieldColorModeId.PALETTE_CLASSIC))
        .draw_style(common.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(0)
        .show_points(common.VisibilityMode.NEVER)
        .span_nulls(True)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull"])
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    return _with_look(panel, look)


def stat_panel(title: str, description: str, targets: list[Target], look: Look) -> stat.Panel:
    """The last value of each series, large, with its sparkline."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_queries(targets))
        .unit(look.unit)
        .color_scheme(dashboard_builders.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .thresholds(
            dashboard_builders.ThresholdsConfig()
            .mode(model.ThresholdsMode.ABSOLUTE)
            .steps([model.Threshold(value=None, color="green")])
        )
        .reduce_options(
            common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)
        )
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.AREA)
        .justify_mode(common.BigValueJustifyMode.AUTO)
        .orientation(common.VizOrientation.AUTO)
        .text_mode(common.BigValueTextMode.AUTO)
    )
    return _with_look(panel, look)


def _with_look(panel: _Panel, look: Look) -> _Panel:
    if look.decimals is not None:
        panel.decimals(look.decimals)
    if look.min is not None:
        panel.min(look.min)
    if look.max is not None:
        panel.max(look.max)
    return panel


def datasource_variable() -> dashboard_builders.DatasourceVariable:
    return (
        dashboard_builders.DatasourceVariable("datasource").label("Data source").type("prometheus")
    )


def query_variable(name: str, label: str, query: str) -> dashboard_builders.QueryVariable:
    """A multi-value variable of `label_values(...)`, "All" (`.*`) by default."""
    return (
        dashboard_builders.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def label_values(metric: str, selector: str, label: str) -> str:
    """Grafana's variable query: the values of `label` on `metric{selector}`."""
    series = f"{metric}{{{selector}}}" if selector else metric
    return f"label_values({series}, {label})"


@dataclass
class Board:
    """A dashboard being built: rows and panels in reading order, numbered and laid out."""

    uid: str
    title: str
    description: str
    variables: list[Builder[model.VariableModel]]
    _panels: list[model.Panel | model.RowPanel] = field(default_factory=list, init=False)
    #: Where the next panel goes, and the height of the tallest panel on its line.
    _x: int = field(default=0, init=False)
    _y: int = field(default=0, init=False)
    _line_height: int = field(default=0, init=False)

    def row(self, title: str) -> Board:
        self._new_line()
        row = dashboard_builders.Row(title).build()
        row.id_val = len(self._panels) + 1
        row.grid_pos = model.GridPos(h=1, w=GRID_COLUMNS, x=0, y=self._y)
        self._panels.append(row)
        self._y += 1
        return self

    def panel(self, builder: Builder[model.Panel], width: int, height: int) -> Board:
        if self._x + width > GRID_COLUMNS:
            self._new_line()
        panel = builder.build()
        panel.id_val = len(self._panels) + 1
        panel.grid_pos = model.GridPos(h=height, w=width, x=self._x, y=self._y)
        self._panels.append(panel)
        self._x += width
        self._line_height = max(self._line_height, height)
        return self

    def _new_line(self) -> None:
        self._y += self._line_height
        self._x, self._line_height = 0, 0

    def build(self) -> model.Dashboard:
        board = (
            dashboard_builders.Dashboard(self.title)
            .uid(self.uid)
            .description(self.description)
            .tags([TAG])
            .editable()
            .tooltip(model.DashboardCursorSync.CROSSHAIR)
            .refresh("30s")
            .time("now-3h", "now")
            .timezone("")
            .variables(self.variables)
            .annotation(
                # Grafana's own annotations and alerts, as on every new dashboard.
                dashboard_builders.AnnotationQuery()
                .name("Annotations & Alerts")
                .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
                .built_in(1)
                .enable(True)
                .hide(True)
                .icon_color("rgba(0, 211, 255, 1)")
                .type("dashboard")
            )
            .link(
                dashboard_builders.DashboardLink("dsgd")
                .type(model.DashboardLinkType.DASHBOARDS)
                .tags([TAG])
                .as_dropdown(True)
                .keep_time(True)
                .include_vars(False)
            )
            .build()
        )
        # Positions were set above: the SDK's own placement (with_panel) would not wrap a
        # panel wider than what is left of a line.
        board.panels = list(self._panels)
        return board
