#include "report/charts.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace ftl::report {
namespace {

constexpr double kWidth = 640, kHeight = 280;
constexpr double kLeft = 84, kRight = 16, kTop = 32, kBottom = 44;  // plot margins, CSS px
constexpr int kTicks = 5;
constexpr size_t kMarkAllPointsBelow = 60;
const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string number(double v) {
    char text[32];
    std::snprintf(text, sizeof(text), "%.3g", v);
    return text;
}

std::string coordinate(double v) {
    char text[32];
    std::snprintf(text, sizeof(text), "%.2f", v);
    return text;
}

struct Range {
    double low = 0, high = 1;
    // A flat range is widened so that a constant series draws as a line in the middle.
    void widen_if_flat() {
        if (high > low) return;
        const double pad = low == 0 ? 1.0 : std::abs(low) * 0.05;
        low -= pad;
        high += pad;
    }
};

}  // namespace

std::string html_escape(const std::string& text) {
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            case '\'': out += "&#39;"; break;
            default: out += c;
        }
    }
    return out;
}

std::string render_svg(const Chart& chart) {
    std::ostringstream svg;
    svg << "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
        << "\" viewBox=\"0 0 " << kWidth << " " << kHeight << "\" role=\"img\" aria-label=\"" << html_escape(chart.title)
        << "\">\n<text x=\"" << kLeft << "\" y=\"20\" class=\"title\">" << html_escape(chart.title) << "</text>\n";
    Range x, y;
    bool any = false;
    for (const Series& s : chart.series)
        for (const auto& [px, py] : s.points) {
            if (!std::isfinite(px) || !std::isfinite(py)) continue;
            if (!any) x = {px, px}, y = {py, py};
            x = {std::min(x.low, px), std::max(x.high, px)};
            y = {std::min(y.low, py), std::max(y.high, py)};
            any = true;
        }
    if (!any) {
        svg << "<text x=\"" << kWidth / 2 << "\" y=\"" << kHeight / 2 << "\" text-anchor=\"middle\" class=\"empty\">no data yet</text>\n</svg>";
        return svg.str();
    }
    x.widen_if_flat();
    y.widen_if_flat();
    const double plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
    auto sx = [&](double v) { return kLeft + (v - x.low) / (x.high - x.low) * plot_w; };
    auto sy = [&](double v) { return kTop + (1.0 - (v - y.low) / (y.high - y.low)) * plot_h; };

    svg << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << plot_w << "\" height=\"" << plot_h
        << "\" class=\"frame\"/>\n";
    for (int i = 0; i < kTicks; ++i) {
        const double f = static_cast<double>(i) / (kTicks - 1);
        const double yv = y.low + f * (y.high - y.low), xv = x.low + f * (x.high - x.low);
        svg << "<line x1=\"" << kLeft << "\" x2=\"" << kLeft + plot_w << "\" y1=\"" << coordinate(sy(yv)) << "\" y2=\""
            << coordinate(sy(yv)) << "\" class=\"grid\"/><text x=\"" << kLeft - 6 << "\" y=\"" << coordinate(sy(yv) + 4)
            << "\" text-anchor=\"end\" class=\"tick\">" << number(yv) << "</text>\n";
        svg << "<text x=\"" << coordinate(sx(xv)) << "\" y=\"" << kTop + plot_h + 16
            << "\" text-anchor=\"middle\" class=\"tick\">" << number(xv) << "</text>\n";
    }
    svg << "<text x=\"" << kLeft + plot_w / 2 << "\" y=\"" << kHeight - 8 << "\" text-anchor=\"middle\" class=\"axis\">"
        << html_escape(chart.x_label) << "</text>\n<text x=\"14\" y=\"" << kTop + plot_h / 2
        << "\" text-anchor=\"middle\" class=\"axis\" transform=\"rotate(-90 14 " << kTop + plot_h / 2 << ")\">"
        << html_escape(chart.y_label) << "</text>\n";

    for (size_t i = 0; i < chart.series.size(); ++i) {
        const Series& s = chart.series[i];
        const char* colour = kColours[i % (sizeof(kColours) / sizeof(kColours[0]))];
        svg << "<polyline class=\"series\" data-series=\"" << html_escape(s.name) << "\" data-points=\"" << s.points.size()
            << "\" fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"2\" points=\"";
        for (const auto& [px, py] : s.points)
            if (std::isfinite(px) && std::isfinite(py)) svg << coordinate(sx(px)) << "," << coordinate(sy(py)) << " ";
        svg << "\"/>\n";
        if (s.points.size() < kMarkAllPointsBelow)
            for (const auto& [px, py] : s.points)
                if (std::isfinite(px) && std::isfinite(py))
                    svg << "<circle cx=\"" << coordinate(sx(px)) << "\" cy=\"" << coordinate(sy(py)) << "\" r=\"2.5\" fill=\""
                        << colour << "\"><title>" << html_escape(s.name) << " at " << number(px) << ": " << number(py)
                        << "</title></circle>\n";
        const double legend_y = kTop + 14 + 16 * static_cast<double>(i);
        svg << "<rect x=\"" << kLeft + plot_w - 170 << "\" y=\"" << legend_y - 9 << "\" width=\"10\" height=\"10\" fill=\""
            << colour << "\"/><text x=\"" << kLeft + plot_w - 155 << "\" y=\"" << legend_y << "\" class=\"legend\">"
            << html_escape(s.name) << "</text>\n";
    }
    svg << "</svg>";
    return svg.str();
}

}  // namespace ftl::report
