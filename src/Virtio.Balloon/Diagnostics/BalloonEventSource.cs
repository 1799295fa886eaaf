using System.Diagnostics.Tracing;

namespace Virtio.Balloon.Diagnostics;

/// <summary>
/// The balloon's events for dotnet-trace and any EventListener (provider <c>Virtio-Balloon</c>): target changes,
/// inflate and deflate batches, free page hint reports (requested, started, stopped with their counts, done) and
/// malformed guest messages. One event per request or report, never per page or descriptor; every call site checks
/// <see cref="EventSource.IsEnabled()"/> first. Event ids are stable.
/// </summary>
[EventSource(Name = "Virtio-Balloon")]
public sealed class BalloonEventSource : EventSource
{
    /// <summary>The one instance.</summary>
    public static readonly BalloonEventSource Log = new();

    private BalloonEventSource()
    {
    }

    /// <summary>The VMM set a new target (num_pages).</summary>
    [Event(1, Level = EventLevel.Informational, Keywords = Keywords.Balloon, Message = "target {0} pages")]
    public void TargetChanged(long targetPages) => WriteIf(1, Keywords.Balloon, targetPages);

    /// <summary>An inflate request reached the back end.</summary>
    [Event(2, Level = EventLevel.Informational, Keywords = Keywords.Balloon, Message = "inflated {0} pages in {1} runs")]
    public void InflateBatch(long pages, int runs)
    {
        if (IsEnabled(EventLevel.Informational, Keywords.Balloon))
        {
            WriteEvent(2, pages, runs);
        }
    }

    /// <summary>A deflate request reached the back end.</summary>
    [Event(3, Level = EventLevel.Informational, Keywords = Keywords.Balloon, Message = "deflated {0} pages in {1} runs")]
    public void DeflateBatch(long pages, int runs)
    {
        if (IsEnabled(EventLevel.Informational, Keywords.Balloon))
        {
            WriteEvent(3, pages, runs);
        }
    }

    /// <summary>The VMM requested a free page hint report.</summary>
    [Event(4, Level = EventLevel.Informational, Keywords = Keywords.Hints, Message = "hint report {0} requested")]
    public void HintReportRequested(long commandId) => WriteIf(4, Keywords.Hints, commandId);

    /// <summary>The driver started the report (its command buffer matched).</summary>
    [Event(5, Level = EventLevel.Informational, Keywords = Keywords.Hints, Message = "hint report {0} started")]
    public void HintReportStarted(long commandId) => WriteIf(5, Keywords.Hints, commandId);

    /// <summary>The report ended (the driver's STOP, the VMM's stop, a new id or DONE), with what it brought.</summary>
    [Event(6, Level = EventLevel.Informational, Keywords = Keywords.Hints, Message = "hint report {0} stopped: {1} blocks, {2} pages, {3} ms")]
    public void HintReportStopped(long commandId, long blocks, long pages, double milliseconds)
    {
        if (IsEnabled(EventLevel.Informational, Keywords.Hints))
        {
            WriteEvent(6, commandId, blocks, pages, milliseconds);
        }
    }

    /// <summary>DONE: the guest may take its hinted blocks back.</summary>
    [Event(7, Level = EventLevel.Informational, Keywords = Keywords.Hints, Message = "hints done")]
    public void HintsDone(long commandId) => WriteIf(7, Keywords.Hints, commandId);

    /// <summary>A guest message was refused.</summary>
    [Event(8, Level = EventLevel.Warning, Keywords = Keywords.Errors, Message = "refused: {0}")]
    public void MessageRefused(string reason)
    {
        if (IsEnabled(EventLevel.Warning, Keywords.Errors))
        {
            WriteEvent(8, reason);
        }
    }

    private void WriteIf(int id, EventKeywords keywords, long value)
    {
        if (IsEnabled(EventLevel.Informational, keywords))
        {
            WriteEvent(id, value);
        }
    }

    /// <summary>Event keywords.</summary>
    public static class Keywords
    {
        /// <summary>Targets, inflate and deflate.</summary>
        public const EventKeywords Balloon = (EventKeywords)1;

        /// <summary>Free page hint reports.</summary>
        public const EventKeywords Hints = (EventKeywords)2;

        /// <summary>Refused guest messages.</summary>
        public const EventKeywords Errors = (EventKeywords)4;
    }
}
