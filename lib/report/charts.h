// Line charts as inline SVG, so that a report is one self-contained HTML file that any browser
// shows without scripts or network. Every series is one <polyline class="series"
// data-series="NAME"> (plus a <circle> per point when there are few), so tests and scripts can
// find the data in the DOM.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace ftl::report {

struct Series {
    std::string name;                               // e.g. "train/loss"; also the legend text
    std::vector<std::pair<double, double>> points;  // (x, y), x ascending
};

struct Chart {
    std::string title;
    std::string x_label = "step";
    std::string y_label;
    std::vector<Series> series;
};

// The chart as an <svg> element, 640 x 280 CSS pixels, axes scaled to the data with five
// labelled ticks on each. A chart without points renders its title and "no data yet".
std::string render_svg(const Chart& chart);

// Escapes &, <, >, " and ' for HTML text and attribute values.
std::string html_escape(const std::string& text);

}  // namespace ftl::report
